"""The sum of several processes' metrics, as one collector.

Each smtpd worker answers a scrape with its registry in the text format; the master
parses every answer with prometheus-client's parser and adds the samples up by name
and labels, which is right for counters and histogram buckets, the only kinds the
workers keep (backupmx/metrics/instruments.py).  A worker that ends leaves its last
answer behind as a retired share, so that the sums never go backwards; what it counted
after the last scrape is lost with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

_Key = tuple[str, tuple[tuple[str, str], ...]]


class Sum(Collector):
    """Metric families added up sample by sample, in the order first seen."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}
        self._values: dict[str, dict[_Key, float]] = {}

    def add(self, families: Iterable[Metric]) -> None:
        for fam in families:
            if fam.name not in self._families:
                self._families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                self._values[fam.name] = {}
            values = self._values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                values[key] = values.get(key, 0.0) + s.value

    def add_text(self, text: str) -> None:
        self.add(text_string_to_metric_families(text))

    def collect(self) -> Iterator[Metric]:
        for name, proto in self._families.items():
            fam = Metric(proto.name, proto.documentation, proto.type)
            for (sample, labels), value in self._values[name].items():
                fam.add_sample(sample, dict(labels), value)
            yield fam
