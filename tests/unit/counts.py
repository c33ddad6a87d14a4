"""The metrics this process counted, read through prometheus-client's registry."""

from __future__ import annotations

from backupmx.metrics.instruments import REGISTRY


class Counts:
    """Samples of one counter by one label, as differences from when this was made."""

    def __init__(self, name: str, label: str, *values: str, **fixed: str) -> None:
        self.name, self.label, self.values, self.fixed = name, label, values, fixed
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        return {v: REGISTRY.get_sample_value(self.name, {**self.fixed, self.label: v}) or 0.0
                for v in self.values}

    def delta(self) -> dict[str, float]:
        """What was counted since, the values that did not move left out."""
        now = self._now()
        return {v: now[v] - self.start[v] for v in self.values if now[v] != self.start[v]}
