"""Error classes. Each is a ``vapoursynth.Error`` (what VapourSynth users catch) and also the builtin
exception that says what kind of problem it is, so plain Python callers can catch it the usual way."""

from __future__ import annotations

import vapoursynth as vs


class VsRifeError(vs.Error):
    """Base class; messages start with ``vsrife:``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"vsrife: {message}")


class ParameterError(VsRifeError, ValueError):
    """A parameter has a value that is not allowed; the message names it and what is allowed."""


class ParameterTypeError(VsRifeError, TypeError):
    """A parameter has the wrong type."""


class TimecodesError(VsRifeError, ValueError):
    """Frame times that cannot be used (unreadable, decreasing, too few); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"timecodes: {reason}")
        self.reason = reason


class DeviceError(VsRifeError, ValueError):
    """The requested compute device does not exist or cannot be used."""


class WeightsNotFoundError(VsRifeError, FileNotFoundError):
    """The weights file is not present; the message gives the command that fetches it."""


class WeightsCorruptError(VsRifeError, ValueError):
    """The weights file is truncated, damaged or fails its checksum."""


class UnsafeCheckpointError(VsRifeError, ValueError):
    """The checkpoint would run code when unpickled; it was refused and nothing ran."""


class CheckpointMismatchError(VsRifeError, ValueError):
    """The checkpoint does not fit the requested model's architecture."""


class DownloadError(VsRifeError, OSError):
    """A download failed (offline, timed out, or the file did not match its checksum)."""


class OutOfMemory(VsRifeError, MemoryError):
    """The device ran out of memory; the message says what to lower."""
