"""Every upstream RIFE v4 inference variant as a row of data, and checkpoint layout detection.

Variants whose checkpoints have exactly the same keys and shapes form a *family* (4.25 and 4.26, say):
their code is identical upstream, so any member's weights run correctly under any member's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache

import torch

from .errors import CheckpointMismatchError, ParameterError
from .network import SCALES, Architecture, EncoderSpec, IFNet

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
        return f"{self.members[0]}-family" if len(self.members) == 1 else f"{'/'.join(self.members)} family"


Layout = frozenset[tuple[str, tuple[int, ...]]]


def architecture(model: str) -> Architecture:
    """The architecture of ``model`` (one of :data:`MODELS`)."""
    try:
        return ARCHITECTURES[model]
    except KeyError:
        raise ParameterError(f"model: unknown model {model!r}; known models: {', '.join(MODELS)}") from None


def check_capabilities(model: str | None, scale: float, ensemble: bool) -> None:
    """Refuse a ``scale`` or ``ensemble`` the model cannot take, naming the models that can.

    With ``model`` None (not known until a checkpoint is read) only ``scale`` is checked.
    """
    if isinstance(scale, bool) or scale not in SCALES:
        raise ParameterError(f"scale: must be one of {', '.join(map(str, SCALES))}, not {scale!r}")
    if model is None:
        return
    arch = architecture(model)
    if scale not in arch.scales:
        able = [m for m, a in ARCHITECTURES.items() if scale in a.scales]
        raise ParameterError(f"scale: model {model} does not take scale={scale}; models that do: {', '.join(able)}")
    if ensemble and not arch.supports_ensemble:
        able = [m for m, arch in ARCHITECTURES.items() if arch.supports_ensemble]
        raise ParameterError(
            f"ensemble: model {model} does not support ensemble=True; models that do: {', '.join(able)}"
        )


@cache
def layout_of(arch: Architecture) -> Layout:
    """Parameter names and shapes of an architecture, built on the meta device (no memory, no work)."""
    with torch.device("meta"):
        net = IFNet(arch)
    return frozenset((k, tuple(v.shape)) for k, v in net.state_dict().items())


@cache
def families() -> dict[Layout, Family]:
    groups: dict[Layout, list[str]] = {}
    for model, arch in ARCHITECTURES.items():
        groups.setdefault(layout_of(arch), []).append(model)
    return {layout: Family(tuple(members)) for layout, members in groups.items()}


def family_of(model: str) -> Family:
    return families()[layout_of(architecture(model))]


def checkpoint_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    return frozenset((k, tuple(v.shape)) for k, v in state_dict.items())


def detect_family(state_dict: Mapping[str, torch.Tensor], source: str) -> Family:
    """The family whose layout the canonical ``state_dict`` has exactly, or a clear error."""
    layout = checkpoint_layout(state_dict)
    family = families().get(layout)
    if family is not None:
        return family
    closest_layout, closest = min(families().items(), key=lambda item: len(item[0] ^ layout))
    raise CheckpointMismatchError(
        f"{source} is not a RIFE v4 checkpoint of any known layout; closest is the {closest.name}: "
        + describe_difference(closest_layout, layout)
    )


def resolve_model(state_dict: Mapping[str, torch.Tensor], model: str | None, source: str) -> str:
    """The model name to run ``state_dict`` as: ``model`` if the layout fits it, else the detected one."""
    family = detect_family(state_dict, source)
    if model is None:
        return family.members[-1]
    if model not in family.members:
        architecture(model)
        raise CheckpointMismatchError(
            f"model: {source} is a {family.name} checkpoint, not {model}; "
            f"pass model={family.members[-1]!r} or leave model unset to detect it"
        )
    return model


def describe_difference(expected: Layout, found: Layout, limit: int = 6) -> str:
    want = dict(expected)
    have = dict(found)
    missing = sorted(k for k in want if k not in have)
    unexpected = sorted(k for k in have if k not in want)
    reshaped = sorted(f"{k} {have[k]} (expected {want[k]})" for k in want.keys() & have.keys() if want[k] != have[k])
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)):
        if items:
            shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)
