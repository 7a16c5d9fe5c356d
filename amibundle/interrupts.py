"""Holding Ctrl-C and SIGTERM off for the few steps that must finish once
begun (the renames that publish a bundle).

Blocking the signals in the main thread is not enough: the kernel may
deliver them to any thread (a progress bar's monitor, a worker), and Python
then runs the handler in the main thread at once. So :func:`held` also
keeps a flag that a handler consults through :func:`defer`: the command
line's handler returns instead of raising while the flag is up, and the
interrupt is raised when the steps are done.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["defer", "held"]

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_state = {"depth": 0, "pending": False}


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Runs the block to its end; an interrupt that arrives meanwhile is
    raised (as KeyboardInterrupt) after it."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if main else None
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if _state["depth"] == 0 and _state["pending"]:
        _state["pending"] = False
        raise KeyboardInterrupt


def defer() -> bool:
    """For a signal handler: True (and the interrupt noted for later) while
    a held block runs, so the handler returns instead of raising."""
    if _state["depth"]:
        _state["pending"] = True
        return True
    return False
