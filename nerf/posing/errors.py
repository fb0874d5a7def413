"""The one error posing raises for a bad input or a scene structure from motion cannot pose."""
from ..input_checks import DatasetError


class PosingError(DatasetError):
    """One line 'PATH: problem' naming the input file or folder; a DatasetError, so callers that report bad
    scene folders report these the same way."""


def one_line(message):
    """message with its control characters (a newline in a path) escaped as Python writes them: an error stays
    one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
