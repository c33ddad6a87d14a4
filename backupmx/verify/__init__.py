"""Address verification: probes to the primary through ``smtp/`` and the persistent cache."""
