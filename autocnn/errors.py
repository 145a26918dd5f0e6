"""The base of every error caused by user input: the CLI prints its one-line message and exits 2."""


class AutocnnError(Exception):
    """User-facing error; the message names the problem and the fix on one line."""
