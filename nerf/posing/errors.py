"""The one error posing raises for a bad input or a scene structure from motion cannot pose."""
from ..input_checks import DatasetError


class PosingError(DatasetError):
    """One line 'PATH: problem' naming the input file or folder; a DatasetError, so callers that report bad
    scene folders report these the same way."""
