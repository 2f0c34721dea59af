"""Errors every entry point turns into a clear message instead of a traceback."""


class UserError(Exception):
    """Bad input from a user (CLI argument, CSV, request): shown as one message, nothing written."""
