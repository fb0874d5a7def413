"""What the command-line tools share: a parser whose errors are one line, and argument types that refuse
impossible numbers (argparse names a type by its __name__ in its message)."""
import argparse
import math
import os
import sys

from .input_checks import DatasetError


def one_line(message):
    """message with its control characters (a newline in a path) escaped as Python writes them, so that an
    error stays one line; other characters as they are (a non-UTF-8 name's surrogate escapes too)."""
    return "".join(repr(c)[1:-1] if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in str(message))


def report(error):
    """The one line `error: ...` of an exception or a text, on stderr."""
    print(f"error: {one_line(error)}", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line `error: --flag: problem` (no usage block), exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {one_line(message.replace('argument ', '', 1))}\n")


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def positive_float(text):
    value = float(text)
    if not sys.float_info.min <= value < math.inf:  # NaN and subnormal numbers fail too
        raise ValueError(text)
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def non_negative_float(text):
    value = float(text)
    if not 0 <= value < math.inf:  # NaN fails too
        raise ValueError(text)
    return value


positive_int.__name__ = "positive integer"
positive_float.__name__ = "positive number"
non_negative_int.__name__ = "non-negative integer"
non_negative_float.__name__ = "non-negative number"


def check_output_file(path, flag, inputs=()):
    """An output file `path` (of `flag`) that cannot be written is refused before the work that would fill it:
    DatasetError if it is a folder, or the nearest existing folder above it is a file or not writable, or it is
    one of the run's `inputs` (check_not_an_input)."""
    if not path:
        raise DatasetError(f"{flag}: empty path")
    if os.path.isdir(path):
        raise DatasetError(f"{path}: is a folder ({flag} names a file)")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise DatasetError(f"{path}: cannot be written ({parent} is a file)")
    if not os.access(path if os.path.exists(path) else parent, os.W_OK):
        raise DatasetError(f"{path}: cannot be written ({flag}: permission denied)")
    check_not_an_input(path, flag, inputs)


def neus_scene_files(folder):
    """What a tool reads of the NeuS-format scene `folder`, for check_not_an_input: its cameras file and its
    image and mask folders."""
    return [os.path.join(folder, name) for name in ("cameras_sphere.npz", "image", "mask")]


def check_not_an_input(path, flag, inputs):
    """An output file `path` (of `flag`) that is one of the `inputs` would be destroyed by the run that reads it:
    DatasetError. `inputs`: files, or folders all of whose files are inputs (a scene's image/); None and missing
    ones are skipped. The same file under another name (a link, another relative path) counts: os.path.samefile.
    An output that does not exist yet is no input."""
    if not os.path.exists(path):
        return
    for source in inputs:
        if source is None or not os.path.exists(source):
            continue
        if os.path.isdir(source):
            same = os.path.samefile(os.path.dirname(os.path.realpath(path)), source)
        else:
            same = os.path.samefile(path, source)
        if same:
            raise DatasetError(f"{path}: {flag} names an input ({source}), which writing it would destroy")
