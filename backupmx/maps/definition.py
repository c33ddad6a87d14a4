"""Table definition files (``pgsql:/etc/x.cf``, ``ldap:/etc/y.cf``): ``name = value`` lines.

Every problem names the file and line, so ``backupmx check`` can point at it; an
unknown parameter is a warning (the file still loads), a malformed line an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from backupmx.config.issues import ConfigIssue
from backupmx.maps.base import MapError, logical_lines, read_source


class DefinitionError(MapError):
    """A malformed definition file, at ``path:line`` (line 0: the file as a whole)."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclass
class Definition:
    """The parameters of one definition file with the line each was set on."""

    path: str
    values: dict[str, tuple[str, int]] = field(default_factory=dict)
    notes: list[ConfigIssue] = field(default_factory=list)

    def get(self, name: str, default: str = "") -> str:
        return self.values[name][0] if name in self.values else default

    def line(self, name: str) -> int:
        return self.values[name][1] if name in self.values else 0

    def error(self, name: str, message: str) -> DefinitionError:
        return DefinitionError(self.path, self.line(name), f"{name}: {message}")

    def number(self, name: str, default: int, low: int = 0) -> int:
        text = self.get(name, str(default))
        try:
            value = int(text)
        except ValueError:
            raise self.error(name, f"expected a number, got {text!r}") from None
        if value < low:
            raise self.error(name, f"must be at least {low}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        text = self.get(name, "yes" if default else "no").lower()
        if text not in ("yes", "no"):
            raise self.error(name, f"expected yes or no, got {text!r}")
        return text == "yes"

    def require(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise DefinitionError(self.path, 0, f"missing required parameter {name}")
        return value

    def warn(self, line: int, message: str) -> None:
        self.notes.append(ConfigIssue(self.path, line, f"warning: {message}"))


def read_definition(spec: str, path: str, known: Iterable[str]) -> Definition:
    """Parse ``path``; MapError when it cannot be read, DefinitionError when malformed."""
    if not path.startswith("/"):
        raise MapError(f"{spec}: expected the absolute path of a table definition file")
    known_names = frozenset(known)
    definition = Definition(path)
    warnings: list[str] = []
    for number, text in logical_lines(read_source(spec, path), path, warnings):
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name or " " in name or "\t" in name:
            raise DefinitionError(path, number, f"expected name = value, got {text!r}")
        if name not in known_names:
            definition.warn(number, f"unknown parameter {name} (ignored)")
            continue
        if name in definition.values:
            definition.warn(number, f"parameter {name} is set again; the last value counts")
        definition.values[name] = (value.strip(), number)
    definition.notes += [ConfigIssue(path, 0, f"warning: {w}") for w in warnings]
    return definition
