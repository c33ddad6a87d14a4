"""Prometheus metrics: the instruments each process counts with, and how the master
serves them all on ``/metrics`` (docs/operations.md lists every family)."""
