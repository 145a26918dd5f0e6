"""The one error a search-space file can cause, located by file, line and key path."""
from __future__ import annotations

from autocnn.errors import AutocnnError


class SpaceError(AutocnnError, ValueError):
    """A bad search-space file (or a sample it cannot turn into a valid genotype).

    The message is one line, `FILE:LINE: key.path: problem; fix`; the parts are kept as attributes.
    """

    def __init__(self, file: str, line: int, key: str, problem: str, fix: str) -> None:
        self.file, self.line, self.key = str(file), int(line), key or "(document)"
        self.problem = _one_line(problem)
        self.fix = _one_line(fix)
        super().__init__(f"{self.file}:{self.line}: {self.key}: {self.problem}; {self.fix}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Loc:
    """Where a value sits in a space file: file, 1-based line and dotted key path."""

    __slots__ = ("file", "line", "key")

    def __init__(self, file: str, line: int, key: str) -> None:
        self.file, self.line, self.key = file, line, key

    def child(self, key: str | int, line: int | None = None) -> "Loc":
        path = f"{self.key}.{key}" if self.key else str(key)
        return Loc(self.file, self.line if line is None else line, path)

    def error(self, problem: str, fix: str) -> SpaceError:
        return SpaceError(self.file, self.line, self.key, problem, fix)

    def __repr__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}"
