"""Stopping a run promptly: Ctrl-C and SIGTERM set ``STOP``; the server's message loop
checks it between polls and ends the round at once instead of waiting for replies (in a
simulation the ServerApp runs in this process)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

STOP = threading.Event()
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """The run was asked to stop (Ctrl-C or SIGTERM); ``exit_code`` is 130 or 143."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 130)


def check() -> None:
    """Raise Interrupted if the run was asked to stop."""
    if STOP.is_set():
        raise Interrupted(_received[0] if _received else signal.SIGINT)


_received: list[int] = []


@contextmanager
def stop_on_signals():
    """Within the block, SIGINT and SIGTERM set STOP and raise Interrupted in the main
    thread; the previous handlers come back afterwards."""
    STOP.clear()
    _received.clear()

    def handler(signum, _frame):
        first = not STOP.is_set()
        _received.append(signum)
        STOP.set()
        if first:
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_CODES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def leave_promptly(exit_code: int, grace: float = 5.0) -> None:
    """Exit with ``exit_code`` now if threads the simulation runtime left behind would
    keep the process alive; return if there are none.

    Called once a stopped or failed run has been saved and every process it started is
    gone. Flower's runtime can leave a non-daemon thread behind (a worker waiting for a
    result from a Ray actor that no longer exists, or the ServerApp thread), and Python
    waits for every one of them before it exits: the command would hang after its last
    line. They get ``grace`` seconds to end on their own.
    """
    import os
    import sys
    import time

    me = threading.current_thread()
    deadline = time.monotonic() + grace

    def lingering() -> list[threading.Thread]:
        return [t for t in threading.enumerate()
                if t is not me and not t.daemon and t.is_alive()]

    for t in lingering():
        t.join(max(0.0, deadline - time.monotonic()))
    if lingering():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
