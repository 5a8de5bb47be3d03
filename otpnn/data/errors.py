"""The one exception type of the data layer."""


class DataError(Exception):
    """Missing, corrupted or mismatched data; the message names the file and what was expected."""
