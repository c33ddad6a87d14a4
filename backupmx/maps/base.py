"""What every lookup table shares: the error type, the Table interface, the line reader."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from backupmx.config import split_list


class MapError(Exception):
    """A table cannot be opened or used; SMTP answers 451 4.3.5 Server configuration error."""


class Table(ABC):
    """A read-only lookup table named ``TYPE:NAME``.

    ``pattern`` tables (cidr, regexp, pcre) only get whole-string queries; fixed-key
    tables fold the query to lower case.  ``source`` is the file behind the table (for
    reload), ``warnings`` what the loader complained about without failing.
    ``blocking`` tables ask a server, so async callers look up in a thread.
    """

    pattern: bool = False
    blocking: bool = False

    def __init__(self, spec: str, source: str | None, warnings: list[str]) -> None:
        self.spec = spec
        self.source = source
        self.warnings = warnings

    def lookup(self, key: str) -> str | None:
        """The value for *key*, None when absent; MapError when the table is unusable."""
        value = self._find(key)
        if value == "":
            # Postfix treats an empty result as a configuration error, not as "found".
            raise MapError(
                f"{self.spec}: lookup of {key!r} returned an empty string"
                " (config error: a table should return no result instead)"
            )
        return value

    async def lookup_async(self, key: str) -> str | None:
        """``lookup`` that keeps the event loop free while a server answers."""
        if self.blocking:
            return await asyncio.to_thread(self.lookup, key)
        return self.lookup(key)

    def close(self) -> None:
        """Release what the table holds open; file tables hold nothing."""
        return None

    @abstractmethod
    def _find(self, key: str) -> str | None: ...


class FixedTable(Table):
    """Exact-key table over a dict whose keys are already lower-case."""

    def __init__(
        self,
        spec: str,
        data: dict[str, str],
        source: str | None = None,
        warnings: list[str] | None = None,
        broken: str | None = None,
    ) -> None:
        super().__init__(spec, source, warnings or [])
        self._data = data
        self._broken = broken

    def _find(self, key: str) -> str | None:
        if self._broken is not None:
            raise MapError(self._broken)
        return self._data.get(key.lower())


def read_source(spec: str, path: str) -> list[str]:
    """The physical lines of a table file; unreadable files are a MapError naming *spec*."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError as exc:
        raise MapError(f"{spec}: cannot open {path}: {exc.strerror or exc}") from exc


def inline_lines(spec: str, name: str) -> list[str]:
    """The rules of a ``{ {rule}, {rule} }`` inline table, one per item."""
    body = name.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise MapError(f"{spec}: an inline table must be enclosed in {{}}")
    try:
        return split_list(body[1:-1])
    except ValueError as exc:
        raise MapError(f"{spec}: {exc}") from exc


def logical_lines(
    lines: Iterable[str], origin: str, warnings: list[str]
) -> Iterator[tuple[int, str]]:
    """Join continuation lines (leading whitespace) and drop comments and blank lines.

    Yields (number of the first physical line, logical line with outer space trimmed).
    """
    current: str | None = None
    start = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if current is None:
                warnings.append(f"{origin}, line {number}: logical line must not start with"
                                " whitespace; ignored")
            else:
                current += line
            continue
        if current is not None:
            yield start, current.strip()
        current, start = line, number
    if current is not None:
        yield start, current.strip()
