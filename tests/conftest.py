"""Shared fixtures: real clips, real weights, upstream's own model code as the oracle, and the compute devices.

Tests that take the ``device`` fixture run on the CPU and, where there is one, on CUDA. All others run on
the CPU only, on purpose: they check timing, planning, formats, files, processes and messages, which do not
depend on the device; what does is in test_device.py and test_real_weights.py's first test.

The oracle is the model code of PyPI ``vsrife==5.7.0`` (HolyWu's plugin, which holds upstream RIFE's
networks). Its wheel is fetched once (checked against the package index's sha256) and its model files are
imported from a temporary package; its ``__init__`` is not used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import vapoursynth as vs

from helpers import bunny_320
from vsrife import weights
from vsrife.apps import samples
from vsrife.apps import upstream as reference


def compute_devices() -> list[str]:
    """Where device-dependent tests run: the CPU always, CUDA when there is one. ``VSRIFE_TEST_DEVICE=cuda``
    makes a missing GPU an error (not a skip); ``=cpu`` keeps to the CPU."""
    wanted = os.environ.get("VSRIFE_TEST_DEVICE", "")
    has_cuda = torch.cuda.is_available()
    if wanted == "cuda" and not has_cuda:
        raise pytest.UsageError("VSRIFE_TEST_DEVICE=cuda, but torch sees no CUDA device")
    if wanted in ("cpu", "cuda"):
        return [wanted]
    return ["cpu", "cuda"] if has_cuda else ["cpu"]


def pytest_generate_tests(metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", compute_devices())


@pytest.fixture(scope="session")
def core() -> vs.Core:
    return vs.core


@pytest.fixture(scope="session")
def upstream() -> Callable[[str], object]:
    """``upstream("4.26")`` → upstream's model module for that version (with ``IFNet`` and maybe ``Head``)."""
    with reference.modules() as load:
        yield load


@pytest.fixture(scope="session")
def weights_file() -> Callable[[str], Path]:
    """The real cached weights of a model (``make test`` fetches 4.0, 4.6 and 4.26 first)."""

    def path(model: str) -> Path:
        return weights.fetch(model)

    return path


@pytest.fixture(scope="session")
def sample_path() -> Callable[[str], Path]:
    return samples.fetch


@pytest.fixture(scope="session")
def small_bunny(sample_path, tmp_path_factory) -> Path:
    """Big Buck Bunny at 320x180, all 132 frames, with its AAC audio copied (keeps CPU runs short)."""
    out = tmp_path_factory.mktemp("clips") / "bunny_320.mp4"
    bunny_320(sample_path("bigbuckbunny"), out)
    return out


def pytest_terminal_summary(terminalreporter) -> None:
    _colour_summary(terminalreporter)
    _scene_summary(terminalreporter)


def _colour_summary(terminalreporter) -> None:
    """Print how synthesized frames of each format family agree with the former zimg path."""
    report = getattr(sys.modules.get("test_colour"), "COLOUR_REPORT", None)
    if not report:
        return
    terminalreporter.section("device colour conversion against the zimg path (synthesized frames)")
    for family, figures in report.items():
        shown = ", ".join(f"{key} {value:.4g}" for key, value in figures.items())
        terminalreporter.write_line(f"{family:<20} {shown}")


def _scene_summary(terminalreporter) -> None:
    """Print the scene-change detector's precision and recall on the real material the tests used, next to
    a fixed mean-difference threshold (misc.SCDetect's method) on the same frames."""
    module = sys.modules.get("test_scene")
    report = getattr(module, "DETECTOR_REPORT", None)
    if not report:
        return
    write = terminalreporter.write_line
    terminalreporter.section("scene-change detection on real footage: found / false / missed")
    write(f"{'clip':<46} {'vsrife.sc_detect':>17} {'mean diff > 0.1':>17}")
    totals = {"ours": [0, 0, 0], "baseline": [0, 0, 0]}
    for name, ours in report.items():
        base = module.BASELINE_REPORT[name]
        write(f"{name:<46} {' / '.join(map(str, ours)):>17} {' / '.join(map(str, base)):>17}")
        for key, row in (("ours", ours), ("baseline", base)):
            totals[key] = [a + b for a, b in zip(totals[key], row, strict=True)]
    cells = []
    for hits, false, missed in totals.values():
        precision = hits / (hits + false) if hits + false else 1.0
        recall = hits / (hits + missed) if hits + missed else 1.0
        cells.append(f"P {precision:.2f} R {recall:.2f}")
    write(f"{'overall precision (P) and recall (R)':<46} {cells[0]:>17} {cells[1]:>17}")
