"""Stopping on request (Ctrl-C, SIGTERM) at safe points only.

A handler that raises wherever Python happens to be loses the request when it lands in a callback
whose exceptions are ignored (JAX's garbage-collector callback printed "Exception ignored ...
KeyboardInterrupt" and the grid trained on), or turns it into a ``SystemError`` that the runner
recorded as a failed run. Here the first SIGINT or SIGTERM only records the request, and asks the
model that is training (:func:`watch`) to stop after its current step (Keras checks
``stop_training`` between steps; its evaluation and prediction loops have flags of their own);
the runner and the grid call :func:`checkpoint` at safe points (after an epoch's training call
returns, between evaluations, between runs), which raises :class:`StopRequested`. A second signal
raises at once: the user insists. The CLI exits 128 + the signal's number (130, 143); the run in
progress is not recorded (a resumed grid trains it again), finished runs are kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import weakref

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: int | None = None
_watched: "weakref.WeakSet" = weakref.WeakSet()


class StopRequested(KeyboardInterrupt):
    """A stop was requested by signal ``signum``: the grid stops; nothing is recorded as failed."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum, frame) -> None:
    raise StopRequested(signum)


def _handler(signum, frame) -> None:
    global _requested
    if _requested is not None:
        raise StopRequested(signum)
    _requested = signum
    for model in list(_watched):
        for flag in ("stop_training", "stop_evaluating", "stop_predicting"):
            setattr(model, flag, True)
    try:
        os.write(2, b"\nnormbench: stopping at the next safe point; the run in progress will not be recorded "
                    b"(signal again to stop at once)\n")
    except OSError:
        pass


@contextlib.contextmanager
def handling(deferred: bool = True):
    """While inside: SIGINT and SIGTERM go to the request handler (where nobody else has set one), or with
    ``deferred=False`` (commands without checkpoints: report, check, pack) raise :class:`StopRequested` at
    once; on leaving, the previous handlers are back and the request is forgotten (``main`` may be called
    again in-process)."""
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        for sig in SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                previous[sig] = signal.signal(sig, _handler if deferred else _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reset()


@contextlib.contextmanager
def kept_handlers():
    """Put SIGINT's and SIGTERM's handlers back after a library call that replaces them (``ray.init`` sets a
    SIGTERM handler that exits at once, and left on, a SIGTERM after ``ray.shutdown`` killed the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(sig, handler)


def requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _requested


def checkpoint() -> None:
    """A safe point: raise :class:`StopRequested` if a stop was requested."""
    if _requested is not None:
        raise StopRequested(_requested)


def watch(model) -> None:
    """Ask ``model`` to stop after its current step when a stop is requested (now, if one already was)."""
    _watched.add(model)
    checkpoint()


def reset() -> None:
    """Forget a request (tests; a library user that caught :class:`StopRequested` and goes on)."""
    global _requested
    _requested = None
    _watched.clear()
