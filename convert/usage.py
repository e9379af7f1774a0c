"""The one error type for a request the converter cannot carry out (bad arguments, unusable paths)."""


class UsageError(Exception):
    """What the user asked for cannot be done; the message says why (one line, exit status 2)."""
