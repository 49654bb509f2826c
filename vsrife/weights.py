"""The weights registry and fetching (no torch here: ``vsrife weights list`` stays quick).

The registry (``vsrife/registry.json``) maps each model to its sources with sha256 and size. Fetched files
live in ``<cache>/models`` (see :func:`vsrife.download.cache_dir`). Nothing is downloaded unless asked
(``python -m vsrife weights fetch`` or ``auto_download=True``). Loading is :mod:`vsrife.checkpoints`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from . import download
from .errors import DownloadError, WeightsCorruptError, WeightsNotFoundError
from .progress import Progress
from .variants import MODELS


@dataclass(frozen=True)
class Download:
    source: str
    sha256: str | None
    size: int | None
    note: str = ""

    @property
    def verified(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class Entry:
    model: str
    file: str
    license: str
    sources: tuple[Download, ...]

    @property
    def path(self) -> Path:
        return weights_dir() / self.file


@cache
def registry() -> dict[str, Entry]:
    """Every known model's registry entry, in release order."""
    raw = json.loads(resources.files("vsrife").joinpath("registry.json").read_text(encoding="utf-8"))
    entries = {
        model: Entry(model, item["file"], item["license"], tuple(Download(**s) for s in item["sources"]))
        for model, item in raw["models"].items()
    }
    unknown = set(entries) ^ set(MODELS)
    if unknown:
        raise RuntimeError(f"registry and variant table disagree on {sorted(unknown)}")
    return entries


def weights_dir() -> Path:
    return download.cache_dir() / "models"


def fetch_command(model: str) -> str:
    return f"python -m vsrife weights fetch {model}"


def file_status(entry: Entry) -> str:
    """``missing``, ``verified`` (matches a known sha256), ``unverified`` (no known hash) or ``mismatch``."""
    path = entry.path
    if not path.is_file():
        return "missing"
    known = [s for s in entry.sources if s.verified]
    if not known:
        return "unverified"
    size = path.stat().st_size
    candidates = [s for s in known if s.size in (None, size)]
    if candidates and download.sha256_of(path) in {s.sha256 for s in candidates}:
        return "verified"
    return "mismatch"


def fetch(model: str, progress: download.Progress | None = None, notify=None) -> Path:
    """Fetch ``model``'s weights into the cache (no-op when a verified copy is there); return the path."""
    entry = registry()[model]
    status = file_status(entry)
    if status in ("verified", "unverified"):
        return entry.path
    errors = []
    for source in entry.sources:
        if notify:
            notify(f"{model}: fetching {source.source}" + ("" if source.verified else " (no known sha256: unverified)"))
        try:
            return download.fetch_source(source.source, entry.path, source.sha256, source.size, progress=progress)
        except DownloadError as e:
            errors.append(str(e))
    raise DownloadError(f"could not fetch model {model}:\n  " + "\n  ".join(errors))


def locate(model: str, auto_download: bool = False) -> Path:
    """The weights file of ``model``: cached, fetched when ``auto_download``, else a clear error."""
    entry = registry()[model]
    if entry.path.is_file():
        if file_status(entry) == "mismatch":
            raise WeightsCorruptError(
                f"{entry.path} does not match the sha256 of any known source of model {model} (damaged or "
                f"replaced); delete it and run `{fetch_command(model)}`"
            )
        return entry.path
    if auto_download:
        return fetch(model, Progress(unit="bytes", label=f"vsrife: {entry.file}"))
    raise WeightsNotFoundError(
        f"weights for {model} are not in {weights_dir()}; run `{fetch_command(model)}`, pass "
        "auto_download=True, or give model_path=",
        param="model",
        model=model,
    )
