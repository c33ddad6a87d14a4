"""Fixed-key tables: postmap source files (hash, btree, texthash), inline: and static:."""

from __future__ import annotations

from backupmx.maps.base import FixedTable, MapError, Table, inline_lines, logical_lines, read_source


def split_entry(text: str, where: str) -> tuple[str, str]:
    """Split a logical line at the first whitespace outside a double-quoted key.

    The key is unquoted (``\\"`` and ``\\\\`` escapes) but not yet case-folded.
    """
    if not text.startswith('"'):
        parts = text.split(None, 1)
        return parts[0], parts[1].strip() if len(parts) > 1 else ""
    chars: list[str] = []
    pos = 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\':
            chars.append(text[pos + 1])
            pos += 2
            continue
        if ch == '"':
            rest = text[pos + 1:]
            if rest and rest[0] not in " \t":
                raise MapError(f"{where}: expected whitespace after the quoted key")
            return "".join(chars), rest.strip()
        chars.append(ch)
        pos += 1
    raise MapError(f"{where}: missing closing '\"' in the key")


def open_source_table(spec: str, path: str, strict_duplicates: bool) -> FixedTable:
    """Load a postmap-format source file.

    hash/btree keep the first of duplicate keys (as postmap does); texthash
    (``strict_duplicates``) becomes unusable, so every lookup fails as a config error.
    """
    warnings: list[str] = []
    data: dict[str, str] = {}
    broken: str | None = None
    for number, text in logical_lines(read_source(spec, path), path, warnings):
        key, value = split_entry(text, f"{path}:{number}")
        if not value:
            warnings.append(f"{path}, line {number}: expected format: key whitespace value")
            continue
        if key.endswith(":"):
            warnings.append(f"{path}, line {number}: record is in \"key: value\" format;"
                            " is this an alias file?")
        key = key.lower()
        if key in data:
            if strict_duplicates:
                broken = broken or (f"{path}:{number}: duplicate key \"{key}\""
                                    " (config error: table unusable)")
            else:
                warnings.append(f"{path}, line {number}: duplicate entry: \"{key}\";"
                                " keeping the first value")
            continue
        data[key] = value
    return FixedTable(spec, data, path, warnings, broken)


def open_inline(spec: str, name: str) -> FixedTable:
    """``inline:{ key=value, { key = value with spaces } }``."""
    data: dict[str, str] = {}
    warnings: list[str] = []
    for number, item in enumerate(inline_lines(spec, name), 1):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise MapError(f"{spec}:{number}: expected key=value, got {item!r}")
        if key in data:
            warnings.append(f"{spec}, item {number}: duplicate entry: \"{key}\";"
                            " keeping the first value")
            continue
        data[key] = value
    return FixedTable(spec, data, None, warnings)


class StaticTable(Table):
    """Answers every query with the same value (the first key tried always matches)."""

    def __init__(self, spec: str, value: str) -> None:
        super().__init__(spec, None, [])
        self.value = value

    def _find(self, key: str) -> str | None:
        return self.value


def open_static(spec: str, name: str) -> StaticTable:
    """``static:value`` or ``static:{ text with spaces }``."""
    value = name
    if name.startswith("{"):
        if not name.endswith("}"):
            raise MapError(f"{spec}: missing '}}'")
        value = name[1:-1].strip()
    return StaticTable(spec, value)
