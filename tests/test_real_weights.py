"""Our filter on real RIFE weights and real frames equals upstream's implementation (the oracle).

The first test runs on every compute device (see conftest's ``device``): fp32 there is IEEE fp32 on both
sides. Padding, scale and ensemble are the network's arithmetic, the same on any device: CPU only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import FP32_NETWORK_TOLERANCE, clip_from_array, frame_array, read_rgb_frames, upstream_forward
from vsrife import rife
from vsrife.apps import upstream as reference
from vsrife.variants import architecture

REAL_MODELS = ["4.0", "4.6", "4.26"]
TOLERANCE = FP32_NETWORK_TOLERANCE


@pytest.fixture(scope="module")
def real_frames(sample_path) -> np.ndarray:
    """Big Buck Bunny frames 40 and 41 (strong motion), 256x192 crops: no padding for any version."""
    return read_rgb_frames(sample_path("bigbuckbunny"), [40, 41], crop=(512, 256, 256, 192))


def raw_state_dict(path) -> dict:
    return reference.state_dict(path)


@pytest.mark.parametrize("model", REAL_MODELS)
def test_real_weights_equal_upstream(model, real_frames, upstream, weights_file, device):
    out = rife(clip_from_array(real_frames), model=model, factor_num=4, device=device, fp16=False)
    img0, img1 = (torch.from_numpy(real_frames[i : i + 1]) for i in range(2))
    state = raw_state_dict(weights_file(model))
    for n, t in [(1, 0.25), (2, 0.5), (3, 0.75)]:
        expected = upstream_forward(upstream(model), state, img0, img1, t, device=device)[0].numpy()
        got = frame_array(out, n)
        assert np.abs(got - expected).max() <= TOLERANCE, f"{model} t={t}"
        # a real in-between: not a copy of either source frame
        assert min(np.abs(got - real_frames[0]).mean(), np.abs(got - real_frames[1]).mean()) > 1e-3


@pytest.mark.parametrize("model", REAL_MODELS)
def test_padding_matches_upstream_padding(model, sample_path, upstream, weights_file):
    """A size no version takes as is (200x120): padded like upstream's filter pads, then cropped back."""
    frames = read_rgb_frames(sample_path("bigbuckbunny"), [40, 41], crop=(540, 300, 200, 120))
    out = rife(clip_from_array(frames), model=model, device="cpu")
    img0, img1 = (torch.from_numpy(frames[i : i + 1]) for i in range(2))
    multiple = architecture(model).size_multiple(1.0)
    expected = upstream_forward(
        upstream(model), raw_state_dict(weights_file(model)), img0, img1, 0.5, multiple=multiple
    )
    got = frame_array(out, 1)
    assert got.shape == (3, 120, 200)
    assert np.abs(got - expected[0].numpy()).max() <= TOLERANCE


@pytest.mark.parametrize(("model", "scale", "ensemble"), [("4.26", 0.5, False), ("4.6", 2.0, True)])
def test_scale_and_ensemble_match_upstream(model, scale, ensemble, real_frames, upstream, weights_file):
    out = rife(clip_from_array(real_frames), model=model, scale=scale, ensemble=ensemble, device="cpu")
    img0, img1 = (torch.from_numpy(real_frames[i : i + 1]) for i in range(2))
    state = raw_state_dict(weights_file(model))
    multiple = architecture(model).size_multiple(scale)
    expected = upstream_forward(upstream(model), state, img0, img1, 0.5, scale, ensemble, multiple)[0].numpy()
    assert np.abs(frame_array(out, 1) - expected).max() <= TOLERANCE
