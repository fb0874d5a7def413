"""Checks of the values an input file holds, one helper per kind of value, shared by every format: each returns
the value converted (a float, a float64 matrix) or raises DatasetError with one line naming the file and the
field, saying what the value is and what was expected; and the helpers every reader uses before and after
reading a file: `check_file` (present, a file, not empty; `check_folder` for a folder) and `error_line` (a
library's exception as one line)."""
import os

import numpy as np


class DatasetError(Exception):
    """A problem with the input folder; the message is one line naming the file and the problem."""


def check_file(path, what, error=DatasetError):
    """Raise `error` with one line naming `path` unless it is a non-empty file; `what` is what was expected there,
    with its article ('an image', 'a mesh')."""
    if os.path.isdir(path):
        raise error(f"{path}: is a folder, not {what}")
    check_not_dangling(path, what, error)
    if not os.path.isfile(path):
        raise error(f"{path}: no such file ({what})")
    if os.path.getsize(path) == 0:
        raise error(f"{path}: empty file (0 bytes), expected {what}")


def check_folder(path, what, error=DatasetError):
    """Raise `error` with one line naming `path` unless it is a folder; `what` as for `check_file`."""
    check_not_dangling(path, what, error)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise error(f"{path}: is a file, not {what}")
    if not os.path.isdir(path):
        raise error(f"{path}: no such folder ({what})")


def check_not_dangling(path, what, error):
    """A symbolic link to nothing is neither missing (it is there, os.path.exists notwithstanding) nor usable."""
    if os.path.islink(path) and not os.path.exists(path):
        raise error(f"{path}: dangling symbolic link (to {os.readlink(path)}), expected {what}")


def error_line(err, last=False):
    """One line of a library's exception for an `error:` message: its first line, or with `last` its last (OpenCV
    and COLMAP put the failed check last); the exception's type when it says nothing."""
    lines = str(err).strip().splitlines()
    return (lines[-1] if last else lines[0]) if lines else type(err).__name__


ROTATION_TOLERANCE = 1e-2  # max |R^T R - I| of a pose's rotation part (rounding noise is far below this)


def short_repr(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value):
    """What a value is, for a message: 'a string ('abc')', 'null', 'a list', 'an array of strings'..."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return f"a boolean ({str(bool(value)).lower()})"
    if isinstance(value, str):
        return f"a string ({short_repr(value)})"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, np.ndarray):
        names = {"O": "Python objects", "U": "strings", "S": "byte strings", "c": "complex numbers",
                 "b": "booleans", "V": "records", "M": "dates", "m": "time spans"}
        return f"an array of {names.get(value.dtype.kind, str(value.dtype))}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"the number {short_repr(value)}"
    return f"a {type(value).__name__}"


def is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def number(value, path, what, positive=False, whole=False):
    """A finite float from a JSON value (or NumPy scalar); `positive`: > 0; `whole`: an integer value."""
    if not is_number(value):
        raise DatasetError(f"{path}: {what} is {describe(value)}, expected a number")
    try:
        x = float(value)
    except OverflowError:  # a huge JSON integer
        x = float("inf")
    if not np.isfinite(x):
        raise DatasetError(f"{path}: {what} is {short_repr(value)}, expected a finite number")
    if positive and x <= 0:
        raise DatasetError(f"{path}: {what} is {x:g}, expected a positive number")
    if whole and x != round(x):
        raise DatasetError(f"{path}: {what} is {x:g}, expected a whole number")
    return x


def field_of_view(value, path, what):
    """A field of view in radians, in (0, pi)."""
    x = number(value, path, what)
    if not 0 < x < np.pi:
        raise DatasetError(f"{path}: {what} is {x:g}, expected a field of view in radians between 0 and pi")
    return x


def matrix(value, path, what, shapes=((4, 4),)):
    """A finite float64 matrix of one of `shapes` from nested JSON lists or an array (an npz member)."""
    expected = " or ".join("x".join(map(str, s)) for s in shapes)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise DatasetError(f"{path}: {what} is {describe(value)}, expected numbers")
        m = value.astype(np.float64)
    else:
        if not (isinstance(value, list) and value and all(isinstance(row, list) for row in value)):
            raise DatasetError(f"{path}: {what} is {describe(value)}, expected a {expected} matrix (a list of rows)")
        entries = [x for row in value for x in row]
        if not all(map(is_number, entries)):
            bad = next(x for x in entries if not is_number(x))
            raise DatasetError(f"{path}: {what} has an entry that is {describe(bad)}, expected numbers")
        lengths = sorted({len(row) for row in value})
        if len(lengths) > 1:
            raise DatasetError(f"{path}: {what} has rows of different lengths ({', '.join(map(str, lengths))})")
        try:
            m = np.array(value, dtype=np.float64)
        except OverflowError:  # a huge JSON integer
            raise DatasetError(f"{path}: {what} has an entry too large for a float") from None
    if m.shape not in shapes:
        raise DatasetError(f"{path}: {what} has shape {m.shape}, expected {expected}")
    check_finite(m, path, what)
    return m


def check_finite(matrix, path, key):
    if not np.all(np.isfinite(matrix)):
        raise DatasetError(f"{path}: {key} contains NaN or Inf")


def format_row(values):
    return "[" + ", ".join(f"{x:.4g}" for x in values) + "]"


def check_rigid(m, path, what):
    """A 4x4 camera-to-world matrix must be a rotation and a translation (bottom row [0, 0, 0, 1])."""
    r = m[:3, :3]
    det = np.linalg.det(r)
    error = np.abs(r.T @ r - np.eye(3)).max()
    if abs(det) < 1e-9:
        raise DatasetError(f"{path}: {what} is singular (its rotation part has determinant {det:.3g})")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise DatasetError(f"{path}: {what} has bottom row {format_row(m[3])}, expected [0, 0, 0, 1]")
    if det < 0:
        raise DatasetError(f"{path}: {what} rotation part is a reflection (determinant {det:.3g}), not a rotation")
    if not error <= ROTATION_TOLERANCE:  # also NaN: R^T R of huge entries overflows
        raise DatasetError(f"{path}: {what} rotation part is not a rotation (determinant {det:.4g}, R^T R differs "
                           f"from the identity by up to {error:.3g}; tolerance {ROTATION_TOLERANCE:g})")
