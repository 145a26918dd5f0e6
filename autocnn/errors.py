"""The base of every error caused by user input: the CLI prints its one-line message and exits 2."""


class AutocnnError(Exception):
    """User-facing error; the message names the problem and the fix on one line."""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (at most `limit` characters), or its type's name when it says
    nothing: what a one-line report of a library's error can quote."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__
