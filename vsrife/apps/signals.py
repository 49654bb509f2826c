"""Ctrl-C, SIGTERM and SIGHUP, handled one way for every command.

Two ways to stop, by what a command must do on the way out:

- :func:`interrupts_raise`: the signal unwinds the main thread like Ctrl-C (``KeyboardInterrupt``), so that
  ``finally`` blocks run. For work that stops between short steps and must tidy up in order (a download's
  temporary file, a spread render that keeps its finished chunks).
- :func:`stop_at_once`: the process ends within moments whatever it is doing, after running the cleanups
  registered with :meth:`Stopper.on_stop` (kill the encoder, remove the temporary, say so). For a render,
  whose main thread may be deep in VapourSynth or waiting for a forward that takes seconds on a CPU, and
  whose queued frames could keep it busy for hours: nothing waits for them. A watcher thread, woken by the
  signal through :func:`signal.set_wakeup_fd` (written by the C-level handler at once, even while the main
  thread is inside a C call), runs the cleanups and calls :func:`os._exit`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_INTERRUPTED = 130  # what shells report for a command ended by Ctrl-C


def _heeded(signals: tuple[signal.Signals, ...]) -> tuple[signal.Signals, ...]:
    """The signals a command acts on. SIGINT always, also where it was inherited as ignored (a job started with
    ``&`` from a script): ``kill -INT`` stops it as it stops a run in the foreground. SIGHUP not where it was
    inherited as ignored: that is ``nohup``, whose run must outlive the terminal."""
    return tuple(s for s in signals if not (s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN))


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interrupts_raise(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` unwind the main thread like Ctrl-C (see :func:`_heeded`). (Only the main
    thread may set handlers; elsewhere this does nothing.)"""
    if not _on_main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in _heeded(signals)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Stopper:
    """What to do when the process is stopped: cleanups run in the reverse order of registration, each
    at most once, errors ignored (the process is ending)."""

    def __init__(self) -> None:
        self._cleanups: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.stopping = False

    def on_stop(self, cleanup: Callable[[], None]) -> Callable[[], None]:
        """Run ``cleanup`` if the process is stopped; returns a function that unregisters it."""
        with self._lock:
            self._cleanups.append(cleanup)

        def forget() -> None:
            with self._lock, suppress(ValueError):
                self._cleanups.remove(cleanup)

        return forget

    def stop(self) -> None:
        """Run the cleanups and end the process with status 130."""
        with self._lock:
            self.stopping = True
            cleanups, self._cleanups = self._cleanups[::-1], []
        for cleanup in cleanups:
            with suppress(BaseException):
                cleanup()
        with suppress(BaseException):
            sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


@contextmanager
def stop_at_once() -> Iterator[Stopper]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP (see :func:`_heeded`) end the process at once through the
    returned :class:`Stopper` (see the module's notes). Off the main thread, signals are left as they are."""
    stopper = Stopper()
    if not _on_main_thread():
        yield stopper
        return
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    watcher = threading.Thread(target=_watch, args=(reader, stopper), daemon=True, name="vsrife-stop")
    watcher.start()
    previous_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    # a Python-level handler must be installed for the wakeup byte to be written; it does nothing itself
    previous = {signum: signal.signal(signum, _noted) for signum in _heeded(STOP_SIGNALS)}
    try:
        yield stopper
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(writer)  # the watcher reads end-of-file and returns
        watcher.join()
        os.close(reader)


def _noted(signum: int, frame: object) -> None:
    """The watcher thread acts on the signal; the main thread goes on until the process ends."""


def _watch(reader: int, stopper: Stopper) -> None:
    while True:
        try:
            data = os.read(reader, 64)
        except InterruptedError:
            continue
        if not data:
            return
        if any(byte in {int(s) for s in STOP_SIGNALS} for byte in data):
            stopper.stop()
