"""`python -m vsrife quality`: the protocol, the metrics against direct formulas, and the report."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from vsrife.apps import quality

pytestmark = pytest.mark.slow


def direct_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM written out window by window (Wang et al. 2004), as an independent check."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_metrics_match_their_formulas():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (40, 48)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    # float32 against float64. PSNR: the mean of 1920 squares within γ1921 (1.2e-4) relative, 5e-4 dB. SSIM: a
    # window's moments sum 121 terms up to 255² (0.48 each at worst), so its worst case is 1.3e-3 and the mean's
    # 6e-4, but only were every rounding of every window as bad and of one sign; independent roundings
    # (Higham and Mary 2019: λ√n u) give 6e-5 per window at λ = 3 and a mean over 1140 windows 30 times
    # smaller. 1e-4 still sees a σ of 1.4 for 1.5 (1.2e-4).
    assert quality.ssim(ta, tb) == pytest.approx(direct_ssim(a, b), abs=1e-4)
    assert quality.ssim(ta, ta) == pytest.approx(1.0, abs=1e-6)
    assert quality.psnr(ta, tb) == pytest.approx(10 * np.log10(255**2 / np.mean((a - b) ** 2)), abs=1e-3)


@pytest.fixture(scope="module")
def quick_cases():
    return quality.default_cases(quick=True)


def test_every_method_keeps_the_kept_frames_and_rebuilds_the_rest(quick_cases, tmp_path):
    case = quick_cases[0]
    assert case.label == "bigbuckbunny 2x"
    kept = [n for n in range(0, case.clip.num_frames, 2)]
    scores = {}
    for name, method in quality.methods(case, "cpu", ["4.26"]).items():
        rebuilt = method(case, tmp_path)
        for n in kept[:-1]:
            assert np.array_equal(np.asarray(rebuilt.get_frame(n)[0]), np.asarray(case.clip.get_frame(n)[0])), (name, n)
        scores[name] = quality.score(case, rebuilt).mean()
    # real motion: RIFE rebuilds the dropped frames far better than repeating or blending
    assert scores["RIFE 4.26"][0] > scores["50/50 blend"][0] + 2 > scores["frame repeat"][0] + 2


def test_quick_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vsrife", "quality", "--quick", "--out", str(tmp_path), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    for heading in (
        "### bigbuckbunny 2x",
        "### bikes 2x",
        "### carphone 2x",
        "### bigbuckbunny on twos",
        "### overall",
    ):
        assert heading in result.stdout
    for method in (
        "frame repeat",
        "50/50 blend",
        "mvtools FlowFPS",
        "ffmpeg minterpolate",
        "RIFE 4.26",
        "RIFE 4.26 without sc",
        "RIFE 4.26 dedup",
    ):
        assert f"| {method} |" in result.stdout or f"| **{method}** |" in result.stdout
    for name in ("quality.md", "quality.png", "worst.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
