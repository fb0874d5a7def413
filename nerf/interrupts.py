"""Holding Ctrl-C until a safe moment: between training steps (so a checkpoint holds a completed step), and
while the heavy imports run at start-up (some dependency imports catch BaseException and would swallow it); and
SIGTERM and SIGHUP (a `kill`, a closed terminal) turned into a KeyboardInterrupt while posing, so that its
temporary folders are removed on the way out (left alone, they end the process where it stands, COLMAP's failure
handler dumps a stack, and the hidden work folder beside OUT stays for good). Imports nothing heavy, so the
command line can use it before torch is loaded."""
import signal
import sys
import threading
from contextlib import contextmanager


class DeferredInterrupt:
    """Inside the block a first Ctrl-C (SIGINT) only sets `requested`, for the loop to stop between steps; a
    second one raises KeyboardInterrupt at once. Outside the main thread signals cannot be caught: no effect."""

    def __enter__(self):
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class StartUpInterrupt(DeferredInterrupt):
    """A command's start-up (its heavy imports, its argument parsing): a Ctrl-C is held until the block ends, a
    second one ends the block at once; either way `requested` is set after it (the block may not have run to its
    end), and `report` prints the one line and gives the exit code."""

    def __exit__(self, exc_type, exc, tb):
        super().__exit__(exc_type, exc, tb)
        if exc_type is KeyboardInterrupt:
            self.requested = True
            return True
        return False

    @staticmethod
    def report():
        print("interrupted during start-up; nothing written", file=sys.stderr)
        return 130


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """The KeyboardInterrupt of a stop signal; `signum` says which."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_stopped(signum, frame):
    raise Stopped(signum)


@contextmanager
def stop_signals_interrupt():
    """Meanwhile STOP_SIGNALS raise Stopped (in the main thread, at the next Python instruction or pycolmap's
    next check for signals); the previous handlers come back after (the default one where the previous was not
    installed from Python). Outside the main thread signals cannot be caught: no effect."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, raise_stopped) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
