"""Read-only lookup tables (``hash:``, ``cidr:``, ``regexp:`` ...) and access-map keys."""

from backupmx.maps.access import access_lookup, address_keys, client_keys, helo_keys
from backupmx.maps.base import MapError, Table
from backupmx.maps.registry import Maps, lookup_list, open_table

__all__ = [
    "MapError",
    "Maps",
    "Table",
    "access_lookup",
    "address_keys",
    "client_keys",
    "helo_keys",
    "lookup_list",
    "open_table",
]
