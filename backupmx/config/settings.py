"""A loaded configuration: parameter values as written, expanded and typed once.

Everything is expanded and type-checked while loading, so a Config that exists is
valid and its getters are dictionary reads. A Config never changes; a reload builds a
new one, and code holding the old one keeps a consistent view.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterator, Mapping

from backupmx.config.expand import ExpansionError, expand
from backupmx.config.issues import ConfigError, ConfigIssue
from backupmx.config.params import PARAMS, Param
from backupmx.config.syntax import parse_main_cf
from backupmx.config.values import Value, convert

_MAX_DEPTH = 100
_INTEGERS = frozenset({"int", "size", "code", "port"})


class Config:
    """The parameters of one configuration file (plus overrides), read-only."""

    __slots__ = ("path", "warnings", "_text", "_lines", "_expanded", "_typed", "_undefined",
                 "_seen_int", "_seen_bool", "_seen_str", "_seen_time")

    def __init__(self, path: builtins.str, text: dict[builtins.str, builtins.str],
                 lines: dict[builtins.str, int]) -> None:
        self.path = path
        self.warnings: builtins.list[ConfigIssue] = []
        self._text = text
        self._lines = lines
        self._expanded: dict[builtins.str, builtins.str] = {}
        self._typed: dict[builtins.str, Value] = {}
        self._undefined: dict[builtins.str, set[builtins.str]] = {}
        # Values already fetched through a typed getter: the session asks for the
        # same few dozen parameters for every message, so a checked lookup is done
        # once per name and parameter kind, then it is one dict read.
        self._seen_int: dict[builtins.str, builtins.int] = {}
        self._seen_bool: dict[builtins.str, builtins.bool] = {}
        self._seen_str: dict[builtins.str, builtins.str] = {}
        self._seen_time: dict[builtins.str, builtins.int] = {}

    # -- building (only while loading) -----------------------------------------------------

    def _value(self, name: builtins.str, stack: tuple[builtins.str, ...]) -> builtins.str:
        """Expanded text of name; the stack of names being expanded guards against loops."""
        done = self._expanded.get(name)
        if done is not None:
            return done
        param = PARAMS.get(name)
        if param is None:
            if stack:
                self._undefined.setdefault(stack[-1], set()).add(name)
            return ""
        if name in stack:
            loop = " -> ".join((*stack[stack.index(name):], name))
            raise ExpansionError(f"$name expansion loop: {loop}")
        if len(stack) >= _MAX_DEPTH:
            raise ExpansionError(f"$name expansion nested deeper than {_MAX_DEPTH}")
        inner = (*stack, name)
        text = self._text.get(name)
        if text is None and param.compute is not None:
            value = param.compute(lambda other: self._value(other, inner))
        else:
            raw = param.default if text is None else text
            value = raw if param.raw else expand(raw, lambda other: self._value(other, inner))
        self._expanded[name] = value
        return value

    def _build(self) -> builtins.list[ConfigIssue]:
        """Expand and type every parameter; issues for values set in the file come first.

        A default can only fail through a bad value it refers to, which is reported where it
        was set, so default failures are reported only when nothing else explains them.
        """
        issues: builtins.list[ConfigIssue] = []
        from_defaults: builtins.list[ConfigIssue] = []
        for param in PARAMS.values():
            try:
                text = self._value(param.name, ())
            except ExpansionError as exc:
                self._issue(issues, from_defaults, param, f"parameter {param.name}: {exc}")
                continue
            try:
                self._typed[param.name] = convert(param, text)
            except ValueError as exc:
                shown = text if len(text) <= 60 else text[:57] + "..."
                self._issue(issues, from_defaults, param,
                            f'bad value "{shown}" for parameter {param.name}: {exc}')
        for name, missing in self._undefined.items():
            if name in self._text:
                for other in sorted(missing):
                    self.warnings.append(ConfigIssue(
                        self.path, self._lines.get(name, 0),
                        f'parameter {name} refers to undefined parameter "{other}" '
                        "(it expands to nothing)"))
        self._undefined.clear()
        return issues or from_defaults

    def _inert(self, param: Param) -> builtins.bool:
        """Is param set to something backupmx does not act on (the table's `unsupported`)?"""
        if not param.unsupported:
            return False
        return param.supported is None or self._typed[param.name] != convert(param,
                                                                             param.supported)

    def _issue(self, issues: builtins.list[ConfigIssue],
               from_defaults: builtins.list[ConfigIssue], param: Param,
               message: builtins.str) -> None:
        if param.name in self._lines:
            issues.append(ConfigIssue(self.path, self._lines[param.name], message))
        elif param.name in self._text:
            issues.append(ConfigIssue(self.path, 0, f"override: {message}"))
        else:
            from_defaults.append(ConfigIssue(self.path, 0, f"default value: {message}"))

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: builtins.str) -> object:
        """The typed value: str, bool, int (seconds for times), or list[str] for lists."""
        value = self._typed[self._param(name).name]
        return builtins.list(value) if isinstance(value, tuple) else value

    def str(self, name: builtins.str) -> builtins.str:
        """The expanded text of any parameter (the canonical word for a choice)."""
        hit = self._seen_str.get(name)
        if hit is not None:
            return hit
        value = self._typed[self._param(name).name]
        text = value if isinstance(value, builtins.str) else self._expanded[name]
        self._seen_str[name] = text
        return text

    def bool(self, name: builtins.str) -> builtins.bool:
        hit = self._seen_bool.get(name)
        if hit is not None:
            return hit
        self._param(name, {"bool"})
        value = self._seen_bool[name] = self._typed[name] is True
        return value

    def int(self, name: builtins.str) -> builtins.int:
        """An integer, size, reply code or port."""
        hit = self._seen_int.get(name)
        if hit is not None:
            return hit
        self._param(name, _INTEGERS)
        value = self._typed[name]
        assert isinstance(value, builtins.int)
        self._seen_int[name] = value
        return value

    def time(self, name: builtins.str) -> builtins.int:
        """A time value in seconds."""
        hit = self._seen_time.get(name)
        if hit is not None:
            return hit
        self._param(name, {"time"})
        value = self._typed[name]
        assert isinstance(value, builtins.int)
        self._seen_time[name] = value
        return value

    def list(self, name: builtins.str) -> builtins.list[builtins.str]:
        self._param(name, {"list"})
        value = self._typed[name]
        assert isinstance(value, tuple)
        return builtins.list(value)

    def raw(self, name: builtins.str) -> builtins.str | None:
        """The value as written (unexpanded), or None when the file does not set it."""
        return self._text.get(self._param(name).name)

    def line_of(self, name: builtins.str) -> builtins.int | None:
        """The line of the file where name is set, or None (not set, or set by an override)."""
        return self._lines.get(self._param(name).name)

    def is_set(self, name: builtins.str) -> builtins.bool:
        return self._param(name).name in self._text

    def expand(self, text: builtins.str,
               extra: Mapping[builtins.str, builtins.str] | None = None) -> builtins.str:
        """Expand $name references in text; names in extra win over parameters.

        This is how templates such as default_rbl_reply get their per-use variables.
        """
        def lookup(name: builtins.str) -> builtins.str:
            if extra is not None and name in extra:
                return extra[name]
            return self._expanded.get(name, "")

        try:
            return expand(text, lookup)
        except ExpansionError as exc:
            raise ConfigError([ConfigIssue(self.path, 0, f'in "{text}": {exc}')]) from None

    def items(self) -> Iterator[tuple[builtins.str, builtins.str]]:
        """(name, expanded value) of every parameter, by name, like `postconf`."""
        for name in sorted(PARAMS):
            yield name, self._expanded[name]

    def _param(self, name: builtins.str, kinds: set[builtins.str] | frozenset[builtins.str]
               | None = None) -> Param:
        param = PARAMS.get(name)
        if param is None:
            raise KeyError(f"unknown parameter {name}")
        if kinds is not None and param.type not in kinds:
            raise TypeError(f"parameter {name} is of type {param.type}, not {'/'.join(kinds)}")
        return param


def parse(text: builtins.str, path: builtins.str = "<string>",
          overrides: Mapping[builtins.str, builtins.str] | None = None) -> Config:
    """Build a Config from main.cf text; raises ConfigError listing every issue."""
    assignments, issues = parse_main_cf(text, path)
    values: dict[builtins.str, builtins.str] = {}
    lines: dict[builtins.str, int] = {}
    warnings: builtins.list[ConfigIssue] = []
    for a in assignments:
        if a.name not in PARAMS:
            issues.append(ConfigIssue(path, a.line, unknown_message(a.name)))
            continue
        if a.name in lines:
            warnings.append(ConfigIssue(path, a.line, f"parameter {a.name} is set again; "
                                        f"this replaces the value from line {lines[a.name]}"))
        values[a.name], lines[a.name] = a.value, a.line
    for name, value in (overrides or {}).items():
        if name not in PARAMS:
            issues.append(ConfigIssue(path, 0, f"override: {unknown_message(name)}"))
            continue
        values[name] = value
        lines.pop(name, None)
    config = Config(path, values, lines)
    issues.extend(config._build())
    if issues:
        raise ConfigError(sorted(issues, key=lambda i: i.line))
    for name, written in values.items():
        if config._inert(PARAMS[name]):
            warnings.append(ConfigIssue(path, lines.get(name, 0),
                                        PARAMS[name].support_warning(written)))
    config.warnings = sorted(warnings + config.warnings, key=lambda i: i.line)
    return config


def load(path: builtins.str, overrides: Mapping[builtins.str, builtins.str] | None = None
         ) -> Config:
    """Read and validate a main.cf-style file; raises ConfigError (also when unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, 0, f"cannot read: {exc.strerror or exc}")]) from None
    return parse(text, path, overrides)


def unknown_message(name: builtins.str) -> builtins.str:
    """The unknown-parameter error, with the closest known name as a hint when one is close."""
    close = difflib.get_close_matches(name, PARAMS, n=1, cutoff=0.75)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f'unknown parameter "{name}"{hint}'
