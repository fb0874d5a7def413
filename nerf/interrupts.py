"""Holding Ctrl-C until a safe moment: between training steps (so a checkpoint holds a completed step), and
while the heavy imports run at start-up (some dependency imports catch BaseException and would swallow it).
Imports nothing heavy, so the command line can use it before torch is loaded."""
import signal
import threading


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
