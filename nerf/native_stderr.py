"""Silencing what native libraries (libpng, libjpeg, COLMAP) write straight to file descriptor 2: a bad input or
a run must print one line, ours. Python's own sys.stderr is untouched."""
import os
import sys
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced():
    """Point file descriptor 2 at /dev/null meanwhile; yields a text stream on the real stderr (for progress
    bars), or sys.stderr when there is no usable descriptor 2 (then nothing is silenced). Enter it from one
    thread only."""
    saved, stream = None, sys.stderr
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        stream = os.fdopen(os.dup(saved), "w")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to silence
        pass
    try:
        yield stream
    finally:
        if saved is not None:
            stream.close()
            os.dup2(saved, 2)
            os.close(saved)
