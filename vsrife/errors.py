"""Error classes. Each is a ``vapoursynth.Error`` (what VapourSynth users catch) and also the builtin
exception that says what kind of problem it is, so plain Python callers can catch it the usual way."""

from __future__ import annotations

import re
from collections.abc import Mapping

import vapoursynth as vs


class VsRifeError(vs.Error):
    """Base class; messages start with ``vsrife:``.

    ``param``: the parameter the error is about, if any (the message then reads ``param: reason``);
    ``reason``: the message after it; ``mentions``: other parameters the reason names as ``name=value``,
    so that a front end (the command line) can name them its own way; ``prefix``: who speaks.
    """

    def __init__(
        self,
        reason: str,
        *,
        param: str | None = None,
        mentions: Mapping[str, object] | None = None,
        prefix: str = "vsrife",
    ) -> None:
        super().__init__(f"{prefix}: {param}: {reason}" if param else f"{prefix}: {reason}")
        self.param = param
        self.reason = reason
        self.mentions = dict(mentions or {})


class ParameterError(VsRifeError, ValueError):
    """A parameter has a value that is not allowed; the message names it and what is allowed."""


class ParameterTypeError(VsRifeError, TypeError):
    """A parameter has the wrong type."""


class TimecodesError(VsRifeError, ValueError):
    """Frame times that cannot be used (unreadable, decreasing, too few); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, param="timecodes")


class DeviceError(VsRifeError, ValueError):
    """The requested compute device does not exist or cannot be used."""


class WeightsNotFoundError(VsRifeError, FileNotFoundError):
    """The weights file is not present; the message gives the command that fetches it. ``model``: whose."""

    def __init__(self, reason: str, *, param: str | None = None, model: str | None = None) -> None:
        super().__init__(reason, param=param)
        self.model = model


class WeightsCorruptError(VsRifeError, ValueError):
    """The weights file is truncated, damaged or fails its checksum."""


class UnsafeCheckpointError(VsRifeError, ValueError):
    """The checkpoint would run code when unpickled; it was refused and nothing ran."""


class CheckpointMismatchError(VsRifeError, ValueError):
    """The checkpoint does not fit the requested model's architecture."""


class DownloadError(VsRifeError, OSError):
    """A download failed (offline, timed out, or the file did not match its checksum)."""


class SourceError(VsRifeError, OSError):
    """A file cannot be read as a video; the message says why in one line."""


class OutOfMemory(VsRifeError, MemoryError):
    """The device ran out of memory; the message says what to lower."""


def one_line(error: BaseException | str) -> str:
    """An error's message on one line. Errors raised inside VapourSynth frame callbacks arrive as a Python
    traceback whose last line is ``module.Class: message``: only the message is kept."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return re.sub(r"^(?:\w+\.)+\w+: |^\w*(?:Error|Exception): ", "", lines[-1])
    return "; ".join(lines)
