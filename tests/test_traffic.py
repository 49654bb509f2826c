"""The memory-traffic counter of tools/traffic.py, checked against exact byte counts of single ops, then run
on a whole (small) network."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import traffic

from vsrife import engine

FP32 = 4


def counted(run) -> traffic.Traffic:
    record = traffic.Traffic()
    with torch.no_grad(), traffic.Counting(record):
        run()
    return record


def meta(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_a_convolution_reads_input_weight_and_bias_and_writes_its_output():
    x, weight, bias = meta(2, 3, 16, 24), meta(8, 3, 3, 3), meta(8)
    record = counted(lambda: F.conv2d(x, weight, bias, stride=2, padding=1))
    (op,) = record.ops
    assert op.name == "convolution"
    assert op.read == (2 * 3 * 16 * 24 + 8 * 3 * 3 * 3 + 8) * FP32
    assert op.written == 2 * 8 * 8 * 12 * FP32
    assert not record.hidden


def test_a_cat_reads_its_pieces_once_and_writes_the_whole():
    a, b = meta(1, 2, 8, 8), meta(1, 5, 8, 8, dtype=torch.float16)
    record = counted(lambda: torch.cat((a, b, a), 1))
    (op,) = record.ops
    assert (op.name, op.read, op.written) == ("cat", 2 * 64 * FP32 + 5 * 64 * 2, 9 * 64 * FP32)


def test_views_move_nothing_a_broadcast_counts_once_in_place_writes_its_input():
    x = meta(2, 4, 8, 8)
    t = meta(2, 1, 1, 1)

    def run():
        y = x.reshape(2, -1).view(2, 4, 8, 8).detach()[:, :2]  # views: nothing moves
        z = y + t.expand(2, 2, 8, 8)  # the broadcast reads 2 values, not 2*2*8*8
        z.relu_()  # reads and writes z
        return z

    record = counted(run)
    assert [op.name for op in record.ops] == ["add", "relu_"]
    half = 2 * 2 * 64 * FP32
    assert (record.ops[0].read, record.ops[0].written) == (half + 2 * FP32, half)
    assert (record.ops[1].read, record.ops[1].written) == (half, half)


def test_casts_and_copies():
    x = meta(1, 3, 8, 8, dtype=torch.float16)
    out = meta(1, 3, 8, 8)
    record = counted(lambda: (x.float(), x.to(memory_format=torch.channels_last), out.copy_(x)))
    assert [(op.name, op.cast) for op in record.ops] == [("_to_copy", True), ("_to_copy", False), ("copy_", True)]
    assert record.casts == 2
    assert record.ops[2].read == 3 * 64 * 2  # copy_ overwrites its destination without reading it
    assert record.ops[2].written == 3 * 64 * FP32


def test_convolutions_write_cudnns_layout_and_its_hidden_copies_are_estimated():
    weight = meta(16, 12, 3, 3, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    x = meta(1, 12, 8, 8, dtype=torch.float16)  # NCHW: cuDNN copies it to NHWC, then pads 12 -> 16 channels
    outputs = []
    record = counted(lambda: outputs.append(F.conv2d(x, weight, padding=1)))
    assert outputs[0].is_contiguous(memory_format=torch.channels_last)
    assert record.hidden["convolution input to the weights' layout"] == 2 * 12 * 64 * 2
    assert record.hidden["cuDNN channel padding (NHWC fp16)"] == (12 + 16) * 64 * 2


@pytest.mark.parametrize(
    ("model", "dtype", "channels_last"),
    [("4.26", torch.float16, True), ("4.6", torch.float32, False), ("4.0", torch.float32, False)],
)
def test_a_whole_forward_is_counted(model, dtype, channels_last):
    setup = traffic.Setup(model, 200, 120, dtype, channels_last)
    per_frame, forward = traffic.count(setup)
    assert traffic.padded_size(setup) == {"4.26": (256, 128), "4.6": (224, 128), "4.0": (256, 128)}[model]
    assert forward.count("grid_sampler_2d") > 0 and forward.count("convolution") > 0
    assert forward.bytes > per_frame.bytes
    report = traffic.report(setup, per_frame, forward, top=5, per_op=True)
    assert "read+written" in report and "convolution" in report


def test_live_bytes_count_what_ops_make_while_it_lives():
    x = meta(1, 4, 8, 8)  # made before: not counted
    live = traffic.Live()
    with torch.no_grad(), live:
        y = x * 2  # 1024 bytes
        v = y[:, :2]  # a view: nothing new
        z = v + 1  # 512
        del y  # its memory lives on in the view
        w = x[:, :1].clone()  # 256
        del v  # y's 1024 freed
        u = z * 3  # 512
    assert (live.peak, live.live) == (1024 + 512 + 256, 512 + 256 + 512)
    del z, w, u
    assert live.live == 0


def test_the_heaviest_model_fits_the_engines_forward_budget():
    """The engine sizes its CUDA batches by ``FORWARD_BYTES_PER_PIXEL`` (peak bytes of one timestep's
    in-between step per padded pixel): the heaviest model's step (4.26.heavy: 321 and 473 at 1080p, of the
    table of every model that ``traffic.step_peaks`` makes), in the layout the engine uses for each dtype,
    stays within it."""
    for dtype, channels_last in ((torch.float16, True), (torch.float32, False)):
        setup = traffic.Setup("4.26.heavy", 1920, 1080, dtype, channels_last)
        width, height = traffic.padded_size(setup)
        _, _, step, _ = traffic.step_peaks(setup, 1)
        assert step <= engine.FORWARD_BYTES_PER_PIXEL[dtype] * width * height, dtype


def test_a_1080p_render_stays_under_2_gb_of_device_memory():
    """By design (the engine's own sizing, the steps' peaks counted on meta), the default model and options
    at 1080p: batches of one (a 1080p frame fills a GPU), the frames of every batch in flight within the
    cache, and no copy of a prepared frame (it is made eagerly, the cache keeps its tensors): the graphs' inputs
    are the only copies, both frames of a new pair once."""
    setup = traffic.Setup("4.26", 1920, 1080, torch.float16, True)
    memory, copies = traffic.device_memory(setup)
    assert memory.total < 2e9, traffic.memory_report(memory, copies)
    assert memory.batch == 1
    assert memory.frames_cached >= 2 * memory.workers * engine.IN_FLIGHT
    assert copies.bytes == 2 * memory.graph_inputs  # read and written
