"""What ``check`` says about the table definition files that parameters name.

Every ``pgsql:`` and ``ldap:`` table in any parameter is opened (not connected):
a missing file is reported at the parameter's line, a malformed one at its own
FILE:LINE, and unknown parameters in it as warnings at FILE:LINE.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from backupmx.config import Config
from backupmx.config.issues import ConfigIssue
from backupmx.maps.base import MapError
from backupmx.maps.definition import DefinitionError
from backupmx.maps.network import NetworkTable
from backupmx.maps.registry import Maps

_DEFINITION_TABLE = re.compile(r"(?<![\w-])(?:pgsql|ldap):[^\s,{}]+")


def _specs(cfg: Config) -> Iterator[tuple[str, str]]:
    """(parameter, spec) of each definition-file table named in a parameter, once."""
    seen: set[str] = set()
    for name, value in cfg.items():
        for spec in _DEFINITION_TABLE.findall(value):
            if spec not in seen:
                seen.add(spec)
                yield name, spec


def definition_issues(cfg: Config, maps: Maps) -> list[ConfigIssue]:
    """Errors: definition files that cannot be read or parsed."""
    out = []
    for name, spec in _specs(cfg):
        try:
            maps.get(spec)
        except DefinitionError as e:
            out.append(ConfigIssue(e.path, e.line, f"{spec}: {e.message}"))
        except MapError as e:
            out.append(ConfigIssue(cfg.path, cfg.line_of(name) or 0, f"{name}: {e}"))
    return out


def definition_warnings(cfg: Config, maps: Maps) -> list[ConfigIssue]:
    """Warnings (unknown parameters ...) of the definition files that did load."""
    out: list[ConfigIssue] = []
    for _name, spec in _specs(cfg):
        try:
            table = maps.get(spec)
        except MapError:
            continue  # reported as an error by definition_issues
        if isinstance(table, NetworkTable):
            out += table.notes
    return out
