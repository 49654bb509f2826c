"""Scene changes, still frames and held drawings, measured on real footage against known ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import vapoursynth as vs

from helpers import clip_from_array, frame_array, psnr
from vsrife import engine, rife, sc_detect
from vsrife.engine import Engine
from vsrife.errors import ParameterError, ParameterTypeError
from vsrife.sources import open_video

DETECTOR_REPORT: dict[str, tuple[int, int, int]] = {}  # clip -> (true positives, false positives, misses)
BASELINE_REPORT: dict[str, tuple[int, int, int]] = {}  # the same for a fixed mean-difference threshold
BASELINE_THRESHOLD = 0.1  # misc.SCDetect's default: mean absolute luma difference above 10 %


def source(path, fmt: int | None = None) -> vs.VideoNode:
    clip = open_video(path)
    return clip.resize.Bicubic(format=fmt, matrix_in=1 if clip.height > 576 else 6) if fmt else clip


def detected_cuts(clip: vs.VideoNode) -> list[int]:
    """First frames of new shots, checking that every frame's Prev agrees with its neighbour's Next."""
    marked = sc_detect(clip)
    props = [marked.get_frame(n).props for n in range(marked.num_frames)]
    for n in range(1, len(props)):
        assert props[n]["_SceneChangePrev"] == props[n - 1]["_SceneChangeNext"]
    assert props[0]["_SceneChangePrev"] == 0 and props[-1]["_SceneChangeNext"] == 0
    found = [n for n in range(len(props)) if props[n]["_SceneChangePrev"]]
    return found, baseline_cuts(clip)


def baseline_cuts(clip: vs.VideoNode) -> list[int]:
    """What a fixed threshold on the mean luma difference (misc.SCDetect's method) finds."""
    grey = clip.resize.Bilinear(format=vs.GRAY8, matrix_s="709") if clip.format.color_family == vs.RGB else clip
    grey = grey.std.ShufflePlanes(0, vs.GRAY).resize.Bilinear(format=vs.GRAY8)
    stats = grey.std.PlaneStats(grey[0] + grey[:-1])
    return [n for n in range(1, clip.num_frames) if stats.get_frame(n).props["PlaneStatsDiff"] > BASELINE_THRESHOLD]


def tally(found: list[int], truth: list[int | tuple[int, ...]]) -> tuple[int, list[int]]:
    accept = [set(c) if isinstance(c, tuple) else {c} for c in truth]
    hits = sum(1 for frames in accept if frames & set(found))
    return hits, [n for n in found if not any(n in frames for frames in accept)]


def score(
    name: str, results: tuple[list[int], list[int]], truth: list[int | tuple[int, ...]], exact: bool = True
) -> tuple[float, float]:
    """Record precision and recall of ours and of the baseline; a tuple in ``truth`` is one cut that may be
    found at any of its frames (a cut with one blended frame). With ``exact``, every cut must be found and
    nothing else."""
    found, baseline = results
    hits, false = tally(found, truth)
    DETECTOR_REPORT[name] = (hits, len(false), len(truth) - hits)
    base_hits, base_false = tally(baseline, truth)
    BASELINE_REPORT[name] = (base_hits, len(base_false), len(truth) - base_hits)
    if exact:
        assert (hits, false) == (len(truth), []), f"{name}: found {found}, expected {truth}"
    return hits / max(1, hits + len(false)), hits / max(1, len(truth))


def test_real_cuts_in_bikes(sample_path):
    score("bikes.mp4 (5 real cuts)", detected_cuts(source(sample_path("bikes"))), [30, 76, 137, 187, 242])


def test_real_cuts_in_megamind(sample_path):
    """Frame 0 is black, the film starts at frame 1."""
    score("Megamind.avi (animation, 4 cuts)", detected_cuts(source(sample_path("megamind"))), [1, 98, 154, 200])


def test_one_cut_and_a_slow_brightening(sample_path):
    score("oa4_launch.webm (1 cut, engine glow ramps)", detected_cuts(source(sample_path("launch"))), [74])


FREECOL_HARD_CUTS = [1188, 1531, 1588, 1662, 1680, 1704]
FREECOL_BLENDED_CUTS = [(1573, 1574), (1602, 1603), (1689, 1690), (1710, 1711)]


def test_film_with_dissolves_fades_flashes_and_whip_pans(sample_path):
    """FreeCol's opening film: the hard cuts must all be found; cuts with a blended frame and whip pans are
    hard for any frame-pair detector, so there precision and recall are measured and held to a floor."""
    found, baseline = detected_cuts(source(sample_path("freecol")))
    precision, recall = score(
        "freecol-opening (10 cuts, fades, whip pans)",
        (found, baseline),
        FREECOL_HARD_CUTS + FREECOL_BLENDED_CUTS,
        exact=False,
    )
    assert set(FREECOL_HARD_CUTS) <= set(found)
    assert not [n for n in found if n < 1188], "dissolves and fades in the first 1188 frames are not cuts"
    assert precision >= 0.65 and recall >= 0.8


@pytest.mark.parametrize("name", ["bigbuckbunny", "carphone"])
def test_no_cut_in_continuous_shots(sample_path, name):
    score(f"{name} (one shot)", detected_cuts(source(sample_path(name))), [])


@pytest.mark.parametrize("fmt", [None, vs.RGBS, vs.GRAY8, vs.YUV444P16])
def test_any_format(sample_path, fmt):
    clip = source(sample_path("bikes"), fmt)[20:90]
    if fmt == vs.GRAY8:
        clip = clip.std.ShufflePlanes(0, vs.GRAY)
    assert detected_cuts(clip)[0] == [10, 56]


def test_spliced_real_shots(sample_path):
    """Cuts between three real clips, one of them into a steady fast pan (bikes 90..120)."""
    bikes = source(sample_path("bikes"), vs.YUV420P8).resize.Bicubic(320, 180)
    bunny = source(sample_path("bigbuckbunny")).resize.Bicubic(320, 180)
    phone = source(sample_path("carphone")).resize.Bicubic(320, 180).std.AssumeFPS(bunny)
    bikes = bikes.std.AssumeFPS(bunny)
    clip = bunny[30:60] + bikes[90:120] + phone[:30] + bunny[60:90]
    score("spliced bunny|bikes pan|carphone|bunny", detected_cuts(clip), [30, 60, 90])


def fade(clip: vs.VideoNode, length: int, to_black: bool) -> vs.VideoNode:
    def dim(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        gain = (1 - n / (length - 1)) if to_black else n / (length - 1)
        for p in range(3):
            np.copyto(np.asarray(out[p]), np.asarray(f[p]) * gain)
        return out

    return clip.std.ModifyFrame(clip, dim)


def test_fades_and_flashes_are_not_cuts(sample_path):
    bunny = source(sample_path("bigbuckbunny"), vs.RGBS).resize.Bicubic(320, 180)
    flash = bunny[49].std.Expr("x 0.6 + 1 min")
    clip = (
        bunny[20:35]
        + fade(bunny[35:45], 10, True)
        + fade(bunny[45:55], 10, False)
        + bunny[55:70]
        + flash
        + bunny[71:90]
    )
    score("real frames with fade out/in and a flash", detected_cuts(clip), [])


def test_fade_to_black_then_cut_in(sample_path):
    bunny = source(sample_path("bigbuckbunny"), vs.RGBS).resize.Bicubic(320, 180)
    bikes = source(sample_path("bikes"), vs.RGBS).resize.Bicubic(320, 180).std.AssumeFPS(bunny)
    clip = bunny[20:40] + fade(bunny[40:50], 10, True) + bikes[40:60]
    score("fade to black, then a hard cut in", detected_cuts(clip), [30])


def test_threshold_is_checked():
    clip = vs.core.std.BlankClip(length=3)
    for bad in (0, -1, 3):
        with pytest.raises(ParameterError, match="threshold: must be a number above 0 and at most 2"):
            sc_detect(clip, bad)
    for bad in ("0.3", True, None):
        with pytest.raises(ParameterTypeError, match="threshold: must be a number above 0 and at most 2"):
            sc_detect(clip, bad)


@pytest.fixture(scope="module")
def shot(sample_path) -> np.ndarray:
    """23 consecutive real frames of one moving shot (Big Buck Bunny 8..30), 256x144."""
    clip = source(sample_path("bigbuckbunny"), vs.RGBS).resize.Bicubic(256, 144)
    return np.stack([frame_array(clip, n) for n in range(8, 31)])


def count_network_calls(monkeypatch) -> list[int]:
    """Each batched forward the engine runs, as how many in-betweens it made."""
    calls = []
    original = Engine.interpolate
    monkeypatch.setattr(Engine, "interpolate", lambda self, *a: calls.append(len(a[2])) or original(self, *a))
    return calls


@pytest.mark.parametrize("batch", [engine.CPU_BATCH, engine.MAX_BATCH])
def test_still_pairs_skip_the_network_bit_exact(shot, monkeypatch, batch):
    """Each in-between is computed once, none in still pairs; batched (as on CUDA: the plan is the same on
    any device) each pair's three timesteps are one forward."""
    monkeypatch.setattr(engine, "CPU_BATCH", batch)
    frames = np.concatenate([shot[:3], shot[2:3], shot[2:3], shot[3:5]])  # 0 1 2 2 2 3 4
    calls = count_network_calls(monkeypatch)
    out = rife(clip_from_array(frames), model="4.26", factor_num=4, device="cpu")
    for n in range(8, 17):  # positions 2 .. 4 lie between identical frames
        assert np.array_equal(frame_array(out, n), frames[2])
        assert "RifeTimestep" not in out.get_frame(n).props
    for n in range(out.num_frames):
        out.get_frame(n)
    in_betweens, after_the_end, in_still_pairs = 4 * 7 - 7, 3, 2 * 3
    assert sum(calls) == in_betweens - after_the_end - in_still_pairs
    assert calls == [min(3, batch)] * len(calls), "each pair's timesteps in as few forwards as allowed, once"


def test_static_threshold_none_always_interpolates(shot, monkeypatch):
    frames = np.concatenate([shot[:2], shot[1:2]])
    calls = count_network_calls(monkeypatch)
    out = rife(clip_from_array(frames), model="4.26", static_threshold=None, device="cpu")
    out.get_frame(3)
    assert calls == [1]


@pytest.mark.parametrize("factor", [1, 2])
def test_dedup_restores_real_motion_on_twos(shot, factor):
    """Put a real shot on twos (every odd frame repeats the even one before it); dedup must bring the held
    positions much closer to the real frames there than plain interpolation does."""
    twos = shot.copy()
    twos[1::2] = shot[0:-1:2]
    clip = clip_from_array(twos)
    dedup = rife(clip, model="4.26", factor_num=factor, dedup=True, device="cpu")
    held = range(1, len(shot) - 2, 2)
    gain = []
    for j in held:
        plain = twos[j] if factor == 1 else frame_array(rife(clip, model="4.26", device="cpu"), 2 * j)
        gain.append(psnr(np.clip(frame_array(dedup, j * factor), 0, 1), shot[j]) - psnr(np.clip(plain, 0, 1), shot[j]))
    print(f"dedup gain over plain at held positions, factor {factor}: {np.mean(gain):.2f} dB (min {min(gain):.2f})")
    assert np.mean(gain) > 3.0 and min(gain) > 0.5
    for j in range(0, len(shot) - 2, 2):  # the real drawings stay bit-exact
        assert np.array_equal(frame_array(dedup, j * factor), twos[j])


def test_dedup_keeps_long_holds_still_and_cuts_hard(shot):
    frames = np.concatenate([shot[0:1]] * 5 + [shot[2:3]] * 2 + [shot[4:5]])  # a pause of 5, then on twos
    clip = clip_from_array(frames)
    out = rife(clip, model="4.26", factor_num=1, dedup=True, device="cpu")
    for n in range(5):
        assert np.array_equal(frame_array(out, n), frames[0])  # a real pause: still
    assert out.get_frame(6).props["RifePair"] == [5, 7]  # the twos: in-between of 5 and 7
    cut = clip.std.ModifyFrame(clip, lambda n, f: _mark(f, "_SceneChangePrev", int(n == 7)))
    out = rife(cut, model="4.26", factor_num=1, dedup=True, sc_threshold=None, device="cpu")
    assert np.array_equal(frame_array(out, 6), frames[5])  # the cut wins: the drawing holds up to it


def _mark(frame: vs.VideoFrame, key: str, value: int) -> vs.VideoFrame:
    out = frame.copy()
    out.props[key] = value
    return out


def test_same_rate_needs_dedup():
    clip = vs.core.std.BlankClip(format=vs.RGBS, length=3)
    with pytest.raises(ParameterError, match="allowed only with dedup=True"):
        rife(clip, factor_num=1, device="cpu")
