"""if/endif nesting shared by the pattern tables (cidr, regexp, pcre).

Rules are kept in one flat list; an ``if`` rule stores the index just past its
``endif`` so that a failed condition skips the block in one step.
"""

from __future__ import annotations

from backupmx.maps.base import MapError


class BlockTracker:
    """Pairs ``if`` rules with their ``endif`` while a table is parsed."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._open: list[tuple[int, int]] = []  # (rule index, line number)

    def begin(self, rule_index: int, line: int) -> None:
        self._open.append((rule_index, line))

    def end(self, line: int) -> int:
        """The index of the ``if`` rule this ``endif`` closes."""
        if not self._open:
            raise MapError(f"{self.origin}:{line}: endif without matching if")
        return self._open.pop()[0]

    def finish(self) -> None:
        if self._open:
            raise MapError(f"{self.origin}:{self._open[-1][1]}: if without matching endif")


def keyword(text: str) -> tuple[str, str]:
    """Split off a leading ``if``/``endif`` keyword; ("", text) for an ordinary rule."""
    head, *rest = text.split(None, 1)
    if head == "endif":
        return "endif", rest[0] if rest else ""
    if head == "if":
        return "if", rest[0] if rest else ""
    return "", text
