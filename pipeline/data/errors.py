"""Exceptions and warnings raised by the data sources, and the one shared argument check."""


class DataError(ValueError):
    """A data set, spec or option that cannot be used as given."""


class MissingDataError(DataError, FileNotFoundError):
    """A data directory or file that does not exist (also catchable as FileNotFoundError)."""


class BadImageError(ValueError):
    """An image file that cannot be decoded; names the file and the reason."""

    def __init__(self, item_id: str, reason: str) -> None:
        super().__init__(f"bad image {item_id!r}: {reason}")
        self.item_id = item_id
        self.reason = reason


class BadImageWarning(UserWarning):
    """Emitted for every bad image dropped under on_error='skip'."""


def check_positive_int(name: str, value: object, *, optional: bool = False) -> None:
    """Raises DataError unless value is an int >= 1 (or None when optional); bools are refused."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")
