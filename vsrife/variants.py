"""Every upstream RIFE v4 inference variant as a row of data (no torch: the table is read by the command
line's light commands too).

Variants with the same architecture have exactly the same checkpoint keys and shapes and form a *family*
(4.25 and 4.26, say): their code is identical upstream, so any member's weights run correctly under any
member's name. Recognizing a checkpoint's family from its keys is :mod:`vsrife.checkpoints`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # flow resolutions upstream offers
FLOW_AND_MASK_CHANNELS = 5  # 2 + 2 flow channels (to each frame), 1 blend mask channel


@dataclass(frozen=True)
class EncoderSpec:
    """The per-frame feature encoder of 4.7 and later: stride-2 conv, inner convs, stride-2 deconv.

    ``layout`` picks the parameter names upstream used: ``"sequential"`` (``encode.0``, ``encode.2``, …;
    no input clamp) or ``"head"`` (``encode.cnn0`` … ``encode.cnn3``; input clamped to 0..1).
    """

    hidden: int
    out: int
    inner_convs: int = 2
    layout: Literal["sequential", "head"] = "head"


@dataclass(frozen=True)
class Architecture:
    """Structure and behaviour of one RIFE v4 variant.

    ``block_widths``: channels of each IFBlock, coarse to fine; ``scale_schedule``: the downscale each
    block works at (divided by the user's ``scale``); ``pad_multiple``: frame sizes must be a multiple of
    this at ``scale=1`` (``pad_multiple / scale`` below 1).
    """

    block_widths: tuple[int, ...]
    scale_schedule: tuple[float, ...]
    activation: Literal["prelu", "leaky"] = "leaky"
    body: Literal["conv", "resconv"] = "resconv"
    body_groups: int = 1
    body_skip: bool = False  # 4.0/4.1 add the block input back around the body
    block_out_channels: int = 6  # channels a block predicts (flow 4 + mask 1 + the rest)
    pixel_shuffle_head: bool = True  # 4.5+: deconv to 4*out channels, then PixelShuffle(2)
    passes_features: bool = False  # 4.21+: channels past flow and mask feed the next block
    encoder: EncoderSpec | None = None
    mask_accumulates: bool = False  # before 4.7 each block adds to the mask instead of replacing it
    retries_large_motion: bool = False  # 4.0/4.1 restart at double scale on large early flow
    supports_ensemble: bool = True
    scales: tuple[float, ...] = SCALES
    pad_multiple: int = 32

    def __post_init__(self) -> None:
        if len(self.block_widths) != len(self.scale_schedule):
            raise ValueError("block_widths and scale_schedule must have one entry per block")

    @property
    def encoder_channels(self) -> int:
        return self.encoder.out if self.encoder else 0

    @property
    def carried_channels(self) -> int:
        return self.block_out_channels - FLOW_AND_MASK_CHANNELS if self.passes_features else 0

    def block_in_channels(self, index: int) -> int:
        features = 2 * self.encoder_channels
        if index == 0:
            return 3 + 3 + features + 1  # both frames, their features, timestep
        # warped frames and features, timestep, mask, carried features, then the flow (4)
        return 3 + 3 + features + 1 + 1 + self.carried_channels + 4

    def size_multiple(self, scale: float) -> int:
        """Frame sizes the network takes at ``scale`` must be a multiple of this."""
        return max(self.pad_multiple, int(self.pad_multiple / scale))


_V4_0 = Architecture(
    block_widths=(192, 128, 96, 64),
    scale_schedule=(8, 4, 2, 1),
    activation="prelu",
    body="conv",
    body_skip=True,
    block_out_channels=5,
    pixel_shuffle_head=False,
    mask_accumulates=True,
    retries_large_motion=True,
    pad_multiple=64,  # the retry doubles every block's scale; upstream pads to 32 and then fails
)
_V4_2 = replace(_V4_0, activation="leaky", body_skip=False, retries_large_motion=False, pad_multiple=32)
_V4_5 = replace(_V4_2, body="resconv", pixel_shuffle_head=True)
_V4_6 = replace(_V4_5, block_out_channels=6)
_V4_7 = replace(_V4_6, mask_accumulates=False, encoder=EncoderSpec(16, 4, inner_convs=0, layout="sequential"))
_V4_10 = replace(_V4_7, encoder=EncoderSpec(32, 8, layout="sequential"))
_LITE = (128, 96, 64, 48)
_V4_12_LITE = replace(_V4_10, block_widths=_LITE, encoder=EncoderSpec(32, 4, layout="sequential"))
_V4_13 = replace(_V4_10, encoder=EncoderSpec(32, 8))
_V4_14_LITE = replace(_V4_13, body_groups=2)
_V4_15_LITE = replace(_V4_13, block_widths=_LITE, encoder=EncoderSpec(16, 4))
_V4_20 = replace(_V4_13, block_widths=(384, 192, 96, 48))
_V4_21 = replace(
    _V4_13, block_widths=(256, 192, 96, 48), block_out_channels=13, passes_features=True, supports_ensemble=False
)
_V4_22_LITE = replace(_V4_21, block_widths=(192, 128, 64, 32), encoder=EncoderSpec(16, 4))
_V4_25 = replace(_V4_22_LITE, block_widths=(192, 128, 96, 64, 32), scale_schedule=(16, 8, 4, 2, 1), pad_multiple=64)
_V4_25_LITE = replace(_V4_25, block_widths=(192, 128, 96, 64, 24), scale_schedule=(32, 16, 8, 4, 1), pad_multiple=128)
_V4_25_HEAVY = replace(_V4_25, block_widths=(384, 256, 192, 128, 64))
_V4_26_HEAVY = replace(_V4_25, encoder=EncoderSpec(16, 16))

ARCHITECTURES: dict[str, Architecture] = {
    "4.0": _V4_0,
    "4.1": _V4_0,
    "4.2": _V4_2,
    "4.3": _V4_2,
    "4.4": _V4_2,
    "4.5": _V4_5,
    "4.6": _V4_6,
    "4.7": _V4_7,
    "4.8": _V4_7,
    "4.9": _V4_7,
    "4.10": _V4_10,
    "4.11": _V4_10,
    "4.12": _V4_10,
    "4.12.lite": _V4_12_LITE,
    "4.13": _V4_13,
    "4.13.lite": _V4_12_LITE,
    "4.14": _V4_13,
    "4.14.lite": _V4_14_LITE,
    "4.15": _V4_13,
    "4.15.lite": _V4_15_LITE,
    "4.16.lite": _V4_15_LITE,
    "4.17": _V4_13,
    "4.17.lite": _V4_15_LITE,
    "4.18": _V4_13,
    "4.19": _V4_13,
    "4.20": _V4_20,
    "4.21": _V4_21,
    "4.22": _V4_21,
    "4.22.lite": _V4_22_LITE,
    "4.23": _V4_21,
    "4.24": _V4_13,
    "4.25": _V4_25,
    "4.25.lite": _V4_25_LITE,
    "4.25.heavy": _V4_25_HEAVY,
    "4.26": _V4_25,
    "4.26.heavy": _V4_26_HEAVY,
}
MODELS: tuple[str, ...] = tuple(ARCHITECTURES)
DEFAULT_MODEL = "4.26"

# Tensors some upstream checkpoints carry for training only (teacher blocks, context and refine nets).
TRAINING_ONLY_PREFIXES = ("block_tea.", "teacher.", "caltime.", "contextnet.", "unet.")


@dataclass(frozen=True)
class Family:
    """Versions sharing one checkpoint layout."""

    members: tuple[str, ...]

    @property
    def name(self) -> str:
        """``4.25/4.26 family``; a version alone in its family is ``4.5 family``."""
        return f"{'/'.join(self.members)} family"


def architecture(model: str) -> Architecture:
    """The architecture of ``model`` (one of :data:`MODELS`; :mod:`vsrife.params` checks user input)."""
    return ARCHITECTURES[model]


@cache
def families() -> dict[Architecture, Family]:
    """Versions grouped by architecture, in release order (a test checks that this is the grouping by
    checkpoint layout)."""
    groups: dict[Architecture, list[str]] = {}
    for model, arch in ARCHITECTURES.items():
        groups.setdefault(arch, []).append(model)
    return {arch: Family(tuple(members)) for arch, members in groups.items()}


def family_of(model: str) -> Family:
    return families()[architecture(model)]
