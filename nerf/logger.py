"""Where a run reports: WORKSPACE/log.txt (plain lines) and tensorboardX scalars and images (WORKSPACE/run).
Both open on first use, so nothing is written before the first message."""
import os
import sys
import threading
import time
import traceback
import weakref


def _raised_in_tensorboard(tb):
    return any("tensorboardX" in frame.filename for frame in traceback.extract_tb(tb))


_open_loggers = weakref.WeakSet()  # loggers whose tensorboard writer is open
_hooks_installed = False


def _catch_event_write_failures():
    """tensorboardX writes its event file from a thread and flushes it again from an atexit handler; on a full
    disk each would print a traceback after the run's one error line. Their OSErrors are recorded in the open
    loggers' `events_lost` instead (any other exception is printed as before). Installed once per process."""
    global _hooks_installed
    if _hooks_installed:
        return
    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def record(error):
        for logger in list(_open_loggers):
            logger.events_lost = error

    def on_thread_error(args):
        if issubclass(args.exc_type, OSError) and _raised_in_tensorboard(args.exc_traceback):
            record(args.exc_value)
        else:
            thread_hook(args)

    def on_unraisable(report):
        if isinstance(report.exc_value, OSError) and _raised_in_tensorboard(report.exc_traceback):
            record(report.exc_value)
        else:
            unraisable_hook(report)

    threading.excepthook, sys.unraisablehook = on_thread_error, on_unraisable
    _hooks_installed = True


class Logger:
    def __init__(self, workspace):
        self.workspace = workspace
        self.log_file = None
        self.writer = None
        self.events_lost = None  # why tensorboard events could not be written (a full disk...), or None

    def log(self, msg):
        if self.log_file is None:
            os.makedirs(self.workspace, exist_ok=True)
            # a path that is not UTF-8 (surrogate escapes) is logged as \udcXX rather than failing the run
            self.log_file = open(os.path.join(self.workspace, "log.txt"), "a", encoding="utf-8",
                                 errors="backslashreplace")
        self.log_file.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}\n")
        self.log_file.flush()

    def _tensorboard(self):
        if self.writer is None:
            from tensorboardX import SummaryWriter

            _catch_event_write_failures()
            _open_loggers.add(self)
            # Flushed every few seconds, so a killed run's curves are on disk up to then.
            self.writer = SummaryWriter(os.path.join(self.workspace, "run"), flush_secs=10)
        return self.writer

    def scalars(self, values: dict, step: int):
        for name, value in values.items():
            self._tensorboard().add_scalar(name, value, step)

    def image(self, name, image, step: int):
        """image: [H, W, 3] float in [0, 1]."""
        self._tensorboard().add_image(name, image, step, dataformats="HWC")

    def close(self):
        """Close both files. A failure to write the last tensorboard events is recorded in `events_lost`, not
        raised: the log and the checkpoints are what a run must not lose."""
        try:
            if self.writer is not None:
                self.writer.close()
        except OSError as e:
            self.events_lost = e
        finally:
            if self.log_file is not None:
                try:
                    self.log_file.close()
                except OSError:  # its lines were flushed one by one; only a failed last flush is lost
                    pass
