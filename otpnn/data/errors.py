"""The one exception type of the data layer."""

from otpnn.errors import UsageError


class DataError(UsageError):
    """Missing, corrupted or mismatched data; the message names the file and what was expected."""
