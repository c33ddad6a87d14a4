"""backupmx: a store-and-forward backup MX mail server."""

__version__ = "0.1.0"
