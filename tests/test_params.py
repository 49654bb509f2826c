"""Parameters: one clear error of the right kind for each bad value, and scripts written for the most used
peer (PyPI vsrife 5.x by HolyWu) run here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs

from helpers import clip_from_array
from vsrife import rife
from vsrife.errors import DeviceError, ParameterError, ParameterTypeError, VsRifeError

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def clip() -> vs.VideoNode:
    return clip_from_array(np.random.default_rng(3).random((3, 3, 32, 32), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"factor_num": 2.5}, ParameterTypeError, r"factor_num: must be a whole number, not 2\.5 \(float\)"),
        ({"factor_num": True}, ParameterTypeError, "factor_num: must be a whole number, not True"),
        ({"factor_den": 0}, ParameterError, "factor_den: must be a whole number of at least 1, not 0"),
        ({"fps_den": 1001}, ParameterError, "fps_num: give fps_num too when fps_den is set"),
        ({"fps_num": "60"}, ParameterTypeError, "fps_num: must be a whole number, not '60'"),
        ({"static_threshold": "low"}, ParameterTypeError, "static_threshold: must be a number from 0 to 1"),
        ({"static_threshold": 1.5}, ParameterError, "static_threshold: must be a number from 0 to 1, not 1.5"),
        ({"dedup_threshold": -0.1}, ParameterError, "dedup_threshold: must be a number from 0 to 1"),
        ({"max_hold": 1}, ParameterError, "max_hold: must be a whole number of at least 2, not 1"),
        ({"max_hold": 2.0}, ParameterTypeError, "max_hold: must be a whole number"),
        ({"sc_threshold": 0}, ParameterError, "sc_threshold: must be a number above 0 and at most 2, not 0"),
        ({"sc": "yes"}, ParameterTypeError, "sc: must be True or False, not 'yes'"),
        ({"scale": "1"}, ParameterTypeError, "scale: must be one of 0.25, 0.5, 1.0, 2.0, 4.0"),
        ({"model": 4.26}, ParameterTypeError, "model: must be a version string such as '4.26'"),
        ({"device": 0}, ParameterTypeError, "device: must be 'cpu', 'cuda' or 'cuda:N', not 0"),
        ({"device_index": "0"}, ParameterTypeError, "device_index: must be a whole number, not '0'"),
        ({"device_index": -1}, ParameterError, "device_index: must be a whole number of at least 0"),
        ({"device": "cpu", "device_index": 0}, DeviceError, "device_index: asks for CUDA, but device='cpu'"),
        ({"factor_num": 1}, ParameterError, "factor_num: the same rate changes nothing"),
    ],
)
def test_each_bad_value_is_one_clear_error_of_the_right_kind(clip, kwargs, error, message):
    with pytest.raises(error, match=message) as caught:
        rife(clip, **({"device": "cpu"} | kwargs))
    assert isinstance(caught.value, VsRifeError) and isinstance(caught.value, vs.Error)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"factor_num": 2.0}, {"factor_num": 4.0, "factor_den": 2.0}, {"fps_num": 48.0}, {"fps_num": 48.0, "fps_den": 1.0}],
)
def test_rate_terms_given_as_whole_floats_are_taken(clip, kwargs):
    """Scripts compute rates (``fps * 2.0``): a float that is a whole number is that number, as an int would be."""
    out = rife(clip, model="4.6", device="cpu", **kwargs)
    assert (out.num_frames, out.fps) == (6, 48)
    assert out.get_frame(1).props["RifeTimestep"] == 0.5


def test_arguments_after_the_clip_are_keywords_only(clip):
    """HolyWu's second positional parameter is device_index, ours would be the model: refuse rather than
    guess."""
    with pytest.raises(TypeError, match="positional argument"):
        rife(clip, 0, "4.6")


def test_unknown_keyword_is_a_type_error(clip):
    with pytest.raises(TypeError, match="unexpected keyword argument 'trt_int8'"):
        rife(clip, trt_int8=True, device="cpu")


def test_a_script_for_holywus_vsrife_runs(clip, capfd):
    """The call a vsrife 5.x script makes (its defaults written out), with the device it can have here."""
    out = rife(
        clip,
        model="4.6",
        auto_download=False,
        factor_num=2,
        factor_den=1,
        fps_num=None,
        fps_den=None,
        scale=1.0,
        ensemble=False,
        sc=False,
        sc_threshold=0.15,
        trt_static_shape=True,
        trt_min_shape=[128, 128],
        trt_opt_shape=[1920, 1080],
        trt_max_shape=[1920, 1080],
        trt_workspace_size=0,
        trt_max_aux_streams=None,
        trt_optimization_level=None,
        trt_cache_dir="/tmp",
        device="cuda" if CUDA else "cpu",
    )
    assert out.num_frames == 6 and "RifeTimestep" in out.get_frame(1).props
    err = capfd.readouterr().err.splitlines()
    assert err == [
        "vsrife: ignored (no TensorRT here): trt_cache_dir, trt_max_aux_streams, trt_max_shape, trt_min_shape, "
        "trt_opt_shape, trt_optimization_level, trt_static_shape, trt_workspace_size"
    ]


def test_device_index_asks_for_cuda(clip):
    if CUDA:
        assert "RifeTimestep" in rife(clip, model="4.6", device_index=0).get_frame(1).props
    else:
        with pytest.raises(DeviceError, match=r"device_index: device_index=0 asks for CUDA, which is not available"):
            rife(clip, model="4.6", device_index=0)


def test_trt_takes_the_cuda_path_and_says_so(clip, capfd):
    if CUDA:
        rife(clip, model="4.6", trt=True)
        assert "trt=True: no TensorRT here; running vsrife's own CUDA path" in capfd.readouterr().err
    else:
        with pytest.raises(DeviceError, match=r"trt: trt=True asks for CUDA, which is not available here"):
            rife(clip, model="4.6", trt=True)
        assert capfd.readouterr().err == ""


def test_num_streams_of_holywus_vsrife_4_is_taken(clip, capfd):
    """vsrife 4.x scripts pass num_streams (CUDA streams): on CUDA it sets the batches computed at once; on
    the CPU it does not apply, and one line says so."""
    out = rife(clip, model="4.6", num_streams=2, device="cuda" if CUDA else "cpu")
    assert "RifeTimestep" in out.get_frame(1).props
    err = capfd.readouterr().err
    if not CUDA:
        assert err.splitlines() == ["vsrife: num_streams=2 is for CUDA; on the CPU the engine runs one call per core"]
    with pytest.raises(ParameterError, match="num_streams: must be a whole number of at least 1, not 0"):
        rife(clip, model="4.6", num_streams=0, device="cpu")
