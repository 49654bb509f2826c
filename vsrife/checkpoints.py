"""Checkpoints in: safe loading (no code ever runs, damage is found before use) and recognizing which
variant a checkpoint is from its keys and shapes (spandrel-style detection)."""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import torch

from . import download, params, weights
from .errors import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    VsRifeError,
    WeightsCorruptError,
    WeightsNotFoundError,
)
from .network import IFNet
from .variants import TRAINING_ONLY_PREFIXES, Architecture, Family, architecture, families

MAX_CHECKPOINT_BYTES = 1 << 30  # real RIFE checkpoints are under 100 MB
ZIP_MAGIC = b"PK\x03\x04"
# What zipfile raises on a damaged archive: a bad CRC-32 or header, a broken deflate stream, a short member,
# a mangled directory, an encrypted or unknown member.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def _describe(error: BaseException) -> str:
    """``Type: first line of the message``, or just ``Type`` when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def _check_size(path: Path, size: int) -> None:
    """Refuse empty and oversized files from their size alone, before any byte is read."""
    if size == 0:
        raise WeightsCorruptError(f"{path} is empty (0 bytes); it is truncated or damaged: delete it")
    if size > MAX_CHECKPOINT_BYTES:
        raise WeightsCorruptError(
            f"{path} is {size} bytes ({size / 2**30:.1f} GiB), over the {MAX_CHECKPOINT_BYTES >> 30} GiB limit "
            "for a checkpoint (RIFE checkpoints are under 100 MB); not read"
        )


def _is_zip(path: Path) -> bool:
    """Whether torch reads ``path`` as a zip archive (it decides on the first four bytes, as here)."""
    with open(path, "rb") as f:
        return f.read(4) == ZIP_MAGIC


def check_zip_archive(path: Path) -> None:
    """Check every member of a ``torch.save`` zip archive against its CRC-32 (torch's reader does not),
    reading in chunks so that memory stays bounded."""
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as e:
        raise WeightsCorruptError(
            f"{path} is a zip archive whose directory cannot be read ({_describe(e)}); it is truncated or damaged"
        ) from None
    with archive:
        members = archive.infolist()
        declared = sum(info.file_size for info in members)
        if declared > MAX_CHECKPOINT_BYTES:
            raise WeightsCorruptError(
                f"{path} unpacks to {declared} bytes, over the {MAX_CHECKPOINT_BYTES >> 30} GiB limit; not read"
            )
        for info in members:
            try:
                _read_through(archive, info)
            except ZIP_ERRORS as e:
                raise WeightsCorruptError(
                    f"{path}: member {info.filename} is damaged ({_describe(e)}); delete the file and fetch it again"
                ) from None


def _read_through(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read one member to its end; zipfile compares the CRC-32 once the last chunk is read."""
    with archive.open(info) as member:
        while member.read(download.CHUNK):
            pass


def check_safetensors(path: Path) -> None:
    """Check the structure of a ``.safetensors`` file before it is loaded.

    The format has no checksums: a flipped bit inside tensor data cannot be detected by anyone. What is
    checked is the layout, so that a truncated or mangled file is refused with a clear message: the 8-byte
    header length lies within the file, the JSON header parses, every tensor's dtype is known, its
    ``data_offsets`` lie within the data region and span product(shape) × the dtype's size, and the tensors
    cover the data region exactly, with neither overlaps nor gaps.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        length_field = f.read(8)
        if len(length_field) < 8:
            raise _bad_safetensors(path, f"{size} bytes is shorter than the 8-byte header length")
        header_length = int.from_bytes(length_field, "little")
        if header_length > size - 8:
            raise _bad_safetensors(path, f"header length {header_length} runs past the end of the file ({size} bytes)")
        if header_length > SAFETENSORS_MAX_HEADER:
            raise _bad_safetensors(path, f"header length {header_length} is over the format's {SAFETENSORS_MAX_HEADER}")
        header_bytes = f.read(header_length)
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise _bad_safetensors(path, f"the header is not JSON ({_describe(e)})") from None
    if not isinstance(header, dict):
        raise _bad_safetensors(path, "the header is not a JSON object")
    data_size = size - 8 - header_length
    spans = sorted(
        _tensor_span(path, name, entry, data_size) for name, entry in header.items() if name != "__metadata__"
    )
    _check_coverage(path, spans, data_size)


def _bad_safetensors(path: Path, reason: str) -> WeightsCorruptError:
    return WeightsCorruptError(f"{path} is not a valid safetensors file: {reason}; it is truncated or damaged")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_span(path: Path, name: str, entry: object, data_size: int) -> tuple[int, int, str]:
    """``(begin, end, name)`` of one tensor's bytes in the data region, after checking its header entry."""
    if not isinstance(entry, dict):
        raise _bad_safetensors(path, f"tensor {name!r} has no description")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        raise _bad_safetensors(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(_is_count(n) for n in shape)):
        raise _bad_safetensors(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)):
        raise _bad_safetensors(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise _bad_safetensors(path, f"tensor {name!r} at bytes {begin}..{end} lies outside the {data_size}-byte data")
    expected = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
    if end - begin != expected:
        raise _bad_safetensors(path, f"tensor {name!r} spans {end - begin} bytes, but {dtype} {shape} needs {expected}")
    return begin, end, name


def _check_coverage(path: Path, spans: list[tuple[int, int, str]], data_size: int) -> None:
    covered = 0
    for begin, end, name in spans:
        if begin < covered:
            raise _bad_safetensors(path, f"tensor {name!r} overlaps the tensor before it")
        if begin > covered:
            raise _bad_safetensors(path, f"bytes {covered}..{begin} of the data belong to no tensor")
        covered = end
    if covered != data_size:
        raise _bad_safetensors(path, f"bytes {covered}..{data_size} of the data belong to no tensor")


def _refused_global(message: str) -> str | None:
    """The global that torch's weights-only unpickler refused to import, if that is why it stopped."""
    match = re.search(r"GLOBAL (\S+)", message)
    if not match:
        return None
    name = match.group(1)
    return name if "." in name else f"builtins.{name}"  # torch drops the builtins. prefix


def _unpickler_reason(message: str) -> str:
    """The unpickler's own one-line reason inside torch's long "Weights only load failed" message."""
    for line in message.splitlines():
        reason = line.rpartition("WeightsUnpickler error:")[2].strip()
        if reason and "weights_only" not in reason and not reason.startswith("Check the documentation"):
            return reason[:200]
    return "refused by the weights-only unpickler"


def _read_pickle(path: Path) -> object:
    """``torch.load(weights_only=True)``: torch's own exact allowlist of tensor types, nothing else is imported
    or called (the three real RIFE checkpoints need nothing beyond it).

    A ``torch.save`` zip archive is first checked against its CRC-32s. A legacy (non-zip) pickle carries no
    checksum: damage inside its tensor data cannot be detected, only damage that breaks its structure.
    """
    if _is_zip(path):
        check_zip_archive(path)
    try:
        with warnings.catch_warnings():  # a non-torch pickle is refused below in one line; not also warned about
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if refused := _refused_global(message):
            raise UnsafeCheckpointError(
                f"{path} would import {refused} when unpickled; refused, nothing was run. Only plain "
                "tensor checkpoints are accepted",
                param="model_path",
            ) from None
        raise WeightsCorruptError(
            f"{path} is not a plain tensor checkpoint ({_unpickler_reason(message)}); nothing was run. It is "
            "damaged, or was not written by torch.save"
        ) from None


def _read_tensors(path: Path) -> Mapping[str, object]:
    if path.suffix == ".safetensors":
        check_safetensors(path)
        from safetensors.torch import load_file

        return load_file(str(path))
    return _read_pickle(path)


def canonicalize(raw: Mapping[str, object], source: str) -> dict[str, torch.Tensor]:
    """Upstream checkpoint → network keys: strip ``module.``, drop training-only tensors."""
    if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    canonical = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsCorruptError(f"{source}: entry {key!r} is not a tensor; not a RIFE checkpoint")
        key = key.removeprefix("module.")
        if not key.startswith(TRAINING_ONLY_PREFIXES):
            canonical[key] = value
    if not canonical:
        raise WeightsCorruptError(f"{source}: holds no network tensors; not a RIFE checkpoint")
    return canonical


@lru_cache(maxsize=4)
def _load_cached(path: Path, mtime_ns: int, size: int) -> dict[str, torch.Tensor]:
    _check_size(path, size)
    try:
        raw = _read_tensors(path)
    except VsRifeError:
        raise
    except Exception as e:  # torch reports damage as RuntimeError, UnpicklingError, EOFError, …
        raise WeightsCorruptError(
            f"{path} cannot be read as a checkpoint ({_describe(e)}); it is truncated or damaged: delete it and "
            "fetch it again"
        ) from None
    if not isinstance(raw, Mapping):
        raise WeightsCorruptError(f"{path} holds a {type(raw).__name__}, not a dictionary of tensors")
    return canonicalize(raw, str(path))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The canonical state dict of a checkpoint file (``.pkl``, ``.pth``, ``.safetensors``), safely loaded."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist or is not a file", param="model_path")
    stat = path.stat()
    return _load_cached(path, stat.st_mtime_ns, stat.st_size)


Layout = frozenset[tuple[str, tuple[int, ...]]]


@cache
def layout_of(arch: Architecture) -> Layout:
    """Parameter names and shapes of an architecture, built on the meta device (no memory, no work)."""
    with torch.device("meta"):
        net = IFNet(arch)
    return frozenset((k, tuple(v.shape)) for k, v in net.state_dict().items())


@cache
def layout_families() -> dict[Layout, Family]:
    """Every family by its checkpoint layout."""
    return {layout_of(arch): family for arch, family in families().items()}


def checkpoint_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    return frozenset((k, tuple(v.shape)) for k, v in state_dict.items())


def detect_family(state_dict: Mapping[str, torch.Tensor], source: str) -> Family:
    """The family whose layout the canonical ``state_dict`` has exactly, or a clear error."""
    layout = checkpoint_layout(state_dict)
    family = layout_families().get(layout)
    if family is not None:
        return family
    closest_layout, closest = min(layout_families().items(), key=lambda item: len(item[0] ^ layout))
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
        raise CheckpointMismatchError(
            f"{source} is a {family.name} checkpoint, not {model}; "
            f"pass model={family.members[-1]!r} or leave model unset to detect it",
            param="model",
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


@dataclass(frozen=True)
class Network:
    """A network ready to move to its device: the module, its version and its architecture."""

    net: IFNet
    model: str
    arch: Architecture


def load_network(
    model: str | None,
    model_path: str | Path | None = None,
    *,
    auto_download: bool = False,
    scale: float = 1.0,
    ensemble: bool = False,
) -> Network:
    """The network of ``model`` (its cached weights, fetched when ``auto_download``) or of the checkpoint at
    ``model_path`` (its version detected from its keys, ``model`` then checked against it), on the CPU,
    loaded strictly. The one way the filter, the benchmark and the tools load a model."""
    path = Path(model_path) if model_path is not None else weights.locate(model, auto_download)
    state_dict = load_state_dict(path)
    name = resolve_model(state_dict, model, str(path))
    if model_path is not None:
        params.capabilities(name, scale, ensemble)  # the version detected from the checkpoint
    arch = architecture(name)
    with torch.device("meta"):
        net = IFNet(arch, scale, ensemble)
    net.load_state_dict(state_dict, strict=True, assign=True)
    return Network(net, name, arch)
