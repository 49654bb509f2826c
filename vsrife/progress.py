"""The one progress line: redrawn in place on stderr (never stdout, which may carry video), at most twice a
second, by downloads (bytes) and renders (frames, speed, ETA)."""

from __future__ import annotations

import sys
import time

REDRAW_S = 0.5
BAR_WIDTH = 30


class Progress:
    """``progress(done, total)`` redraws the line; ``total`` None or 0 when unknown.

    ``unit``: ``"frames"`` draws a bar with speed and ETA, ``"bytes"`` megabytes after ``label``.
    ``already``: work done before this run (a resumed job), left out of the speed.
    ``quiet``: draw nothing.
    """

    def __init__(self, quiet: bool = False, unit: str = "frames", label: str = "", already: int = 0) -> None:
        self.quiet, self.unit, self.label, self.already = quiet, unit, label, already
        self.start = time.monotonic()
        self.shown = 0.0
        self.line_open = False

    def __call__(self, done: int, total: int | None) -> None:
        finished = bool(total) and done >= total
        now = time.monotonic()
        if self.quiet or (now - self.shown < REDRAW_S and not finished):
            return
        self.shown = now
        text = self._frames(done, total or 0, now) if self.unit == "frames" else self._bytes(done, total)
        print(f"\r{text}", end="\n" if finished else "", file=sys.stderr, flush=True)
        self.line_open = not finished

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def end_line(self) -> None:
        """Finish a line left open, so that what is printed next starts a line of its own."""
        if self.line_open:
            print(file=sys.stderr, flush=True)
            self.line_open = False

    def _frames(self, done: int, total: int, now: float) -> str:
        fps = (done - self.already) / max(now - self.start, 1e-9)
        eta = (total - done) / fps if fps > 0 else 0
        filled = BAR_WIDTH * done // max(total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"{self.label}[{bar}] {done}/{total} frames {fps:.2f} fps ETA {eta:5.0f} s"

    def _bytes(self, done: int, total: int | None) -> str:
        shown = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        return f"{self.label}: {shown}"
