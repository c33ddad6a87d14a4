"""Policy state that lives as long as a configuration: connection pools, the greylister.

Built with the :class:`~backupmx.services.Services` of one configuration; a reload
builds a new one and closes the old one.  A RCPT that began under the old
configuration may still be on its way to a policy check, so the old one is closed
only once no check uses it any more (:meth:`PolicyServices.using`): a store or
connection opened by such a late check is closed when it ends, never left open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from backupmx.config import Config
from backupmx.policy.client import (
    Endpoint,
    PolicyClient,
    ServiceSyntaxError,
    Settings,
    parse_service,
    settings_from,
)
from backupmx.policy.greylist import Greylister, GreylistSettings, parse_whitelist
from backupmx.policy.store import GreylistStore, store_path

BUILTINS = ("greylist",)


def _read_lines(paths: list[str]) -> list[str]:
    lines: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines += f.read().splitlines()
    return lines


def greylist_settings(cfg: Config) -> GreylistSettings:
    """The ``greylist_*`` parameters; OSError/ValueError for unreadable whitelist files."""
    return GreylistSettings(
        delay=cfg.time("greylist_delay"),
        max_age=cfg.time("greylist_max_age"),
        retry_window=cfg.time("greylist_retry_window"),
        action=cfg.str("greylist_action"),
        text=cfg.str("greylist_text"),
        client_key=cfg.str("greylist_client_key"),
        ipv4_cidr=cfg.int("greylist_ipv4_cidr"),
        ipv6_cidr=cfg.int("greylist_ipv6_cidr"),
        auto_whitelist=cfg.int("greylist_auto_whitelist_clients"),
        header=cfg.str("greylist_header"),
        hostname=cfg.str("myhostname"),
        whitelist=parse_whitelist(
            _read_lines(cfg.list("greylist_whitelist_clients")),
            _read_lines(cfg.list("greylist_whitelist_recipients")),
        ),
    )


def open_greylister(cfg: Config) -> Greylister:
    return Greylister(GreylistStore(store_path(cfg.str("greylist_store"))),
                      greylist_settings(cfg))


@dataclass
class PolicyServices:
    cfg: Config
    clients: dict[str, PolicyClient] = field(default_factory=dict)
    greylister: Greylister | None = None
    users: int = 0  # policy checks under way
    closing: bool = False  # close() was called; the last check to end closes

    @contextmanager
    def using(self) -> Iterator[PolicyServices]:
        """Hold these services open for one policy check."""
        self.users += 1
        try:
            yield self
        finally:
            self.users -= 1
            if self.closing and not self.users:
                self._close_now()

    def service(self, arg: str) -> tuple[Endpoint, Settings]:
        """Parse a check_policy_service argument; ServiceSyntaxError when malformed."""
        endpoint, settings = parse_service(
            arg, settings_from(self.cfg), self.cfg.str("queue_directory")
        )
        if endpoint.kind == "builtin" and endpoint.host not in BUILTINS:
            raise ServiceSyntaxError(
                f"unknown built-in policy service {endpoint.host!r} (known: greylist)"
            )
        return endpoint, settings

    def client(self, arg: str) -> PolicyClient:
        """The pool of one external endpoint (with its own settings), made on first use."""
        c = self.clients.get(arg)
        if c is None:
            endpoint, settings = self.service(arg)
            c = self.clients[arg] = PolicyClient(endpoint, settings)
        return c

    def greylist(self) -> Greylister:
        if self.greylister is None:
            self.greylister = open_greylister(self.cfg)
        return self.greylister

    def validate_greylist(self) -> None:
        """Fail now, not at the first mail, on a bad store spec or whitelist file."""
        store_path(self.cfg.str("greylist_store"))
        greylist_settings(self.cfg)

    def close(self) -> None:
        """Close the connections and the store, at once or when the last check ends."""
        self.closing = True
        if not self.users:
            self._close_now()

    def _close_now(self) -> None:
        for c in self.clients.values():
            c.close()
        self.clients.clear()
        if self.greylister is not None:
            self.greylister.store.close()
            self.greylister = None
