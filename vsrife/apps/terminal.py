"""What the commands say on the terminal: errors and notes as one line each on stderr (stdout may carry
video), library errors in the command line's own terms."""

from __future__ import annotations

import sys

from ..errors import VsRifeError, WeightsNotFoundError, one_line

# library parameters and the `vsrife smooth` option that sets each
OPTION_OF_PARAMETER = {
    "fps_num": "--fps",
    "fps_den": "--fps",
    "factor_num": "--factor",
    "factor_den": "--factor",
    "scale": "--scale",
    "model": "--model",
    "device": "--device",
    "dedup": "--dedup",
    "static_threshold": "--static-threshold",
}
FLAG_OPTIONS = {"dedup"}  # options without a value: `dedup=True` is `--dedup`


class CommandError(VsRifeError):
    """A problem with the input, the output or the run of a command, said as one line."""

    def __init__(self, message: str, command: str = "vsrife smooth") -> None:
        super().__init__(message, prefix=command)


def tell(message: str, command: str = "vsrife smooth") -> None:
    """A note on stderr, on a line of its own."""
    print(f"{command}: {message}", file=sys.stderr, flush=True)


def in_cli_terms(error: BaseException) -> str:
    """A library error as the command line says it: the parameter it is about as the option that sets it
    (``fps_num: …`` → ``--fps: …``; ``dedup=True`` in the text → ``--dedup``); missing weights with the
    command that fetches them. Other errors: their message on one line."""
    if isinstance(error, WeightsNotFoundError) and error.model is not None:
        return f"--model {error.model}: its weights are not downloaded yet; run `vsrife weights fetch {error.model}`"
    param = getattr(error, "param", None)
    if not isinstance(error, VsRifeError) or param is None:
        return one_line(error).removeprefix("vsrife: ")
    reason = error.reason
    for name, value in error.mentions.items():
        reason = reason.replace(f"{name}={value}", _as_option(name, value))
    return f"{OPTION_OF_PARAMETER.get(param, param)}: {reason}"


def _as_option(name: str, value: object) -> str:
    option = OPTION_OF_PARAMETER.get(name)
    if option is None:
        return f"{name}={value}"
    return option if name in FLAG_OPTIONS else f"{option} {value}"
