"""Command line: ``python -m vsrife …`` or the ``vsrife`` console script."""

from __future__ import annotations

import argparse
import sys

from . import download, samples, weights
from .errors import VsRifeError
from .variants import MODELS, family_of


def _weights_list(args: argparse.Namespace) -> int:
    print(f"weights folder: {weights.weights_dir()}  (set VSRIFE_CACHE_DIR to move it)")
    print(f"{'model':<11} {'status':<10} {'family':<40} where")
    for model, entry in weights.registry().items():
        status = weights.file_status(entry)
        where = str(entry.path) if status != "missing" else entry.sources[0].source
        print(f"{model:<11} {status:<10} {family_of(model).name:<40} {where}")
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    failed = []
    for model in args.models or MODELS:
        if model not in MODELS:
            print(f"vsrife: unknown model {model!r}; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2
        try:
            label = f"vsrife: {weights.registry()[model].file}"
            path = weights.fetch(model, None if args.quiet else download.stderr_progress(label), _notify(args))
        except VsRifeError as e:
            failed.append(model)
            print(str(e), file=sys.stderr)
            continue
        print(f"{model}: {weights.file_status(weights.registry()[model])} {path}")
    if failed:
        print(f"vsrife: could not fetch {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _samples_fetch(args: argparse.Namespace) -> int:
    for name in args.names or samples.SAMPLES:
        if name not in samples.SAMPLES:
            print(f"vsrife: unknown sample {name!r}; known: {', '.join(samples.SAMPLES)}", file=sys.stderr)
            return 2
        print(samples.fetch(name))
    return 0


def _samples_list(args: argparse.Namespace) -> int:
    for name, sample in samples.SAMPLES.items():
        state = "present" if sample.path.is_file() else "missing"
        print(f"{name:<13} {state:<8} {sample.description}")
    return 0


def _notify(args: argparse.Namespace):
    return None if args.quiet else (lambda message: print(f"vsrife: {message}", file=sys.stderr))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsrife", description="RIFE frame interpolation for VapourSynth")
    commands = parser.add_subparsers(dest="command", required=True)

    weights_parser = commands.add_parser("weights", help="list or fetch model weights")
    weights_commands = weights_parser.add_subparsers(dest="action", required=True)
    weights_commands.add_parser("list", help="known models, whether present, and where").set_defaults(
        run=_weights_list
    )
    fetch = weights_commands.add_parser("fetch", help="download weights (sha256-checked) into the cache")
    fetch.add_argument("models", nargs="*", metavar="MODEL", help="models to fetch (default: all known)")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    fetch.set_defaults(run=_weights_fetch)

    samples_parser = commands.add_parser("samples", help="real sample clips for the demo and tests")
    samples_commands = samples_parser.add_subparsers(dest="action", required=True)
    samples_commands.add_parser("list", help="known sample clips").set_defaults(run=_samples_list)
    samples_fetch = samples_commands.add_parser("fetch", help="fetch clips into the cache; prints their paths")
    samples_fetch.add_argument("names", nargs="*", metavar="NAME", help="clips to fetch (default: all)")
    samples_fetch.set_defaults(run=_samples_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except VsRifeError as e:
        print(str(e), file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`); not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("vsrife: interrupted", file=sys.stderr)
        return 130
