"""The deliverer: next hop (transport_maps, relayhost, MX) and SMTP, as outcomes.

Every way a destination's recipients can end here (a table that cannot be read, an
``error:``/``retry:``/``discard:`` transport, no route, an SMTP attempt) comes back
as one :class:`~backupmx.outcome.Outcome` per recipient; nothing is logged or decided
here beyond that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, Envelope, Recipient
from backupmx.outcome import Outcome, Stage
from backupmx.qmgr.ports import Delivery
from backupmx.smtp import tlspolicy
from backupmx.smtp.client import ClientSettings, ConnectionPool, deliver
from backupmx.smtp.nexthop import NextHop, RouteError, route, servers_for
from backupmx.smtp.nexthop import Server as Hop

if TYPE_CHECKING:
    from backupmx.services import Services


class SmtpDeliverer:
    """Delivery with the running configuration (``services`` gives the current one)."""

    def __init__(self, services: Callable[[], Services], port: Callable[[], int],
                 pool: ConnectionPool) -> None:
        self.services = services
        self.port = port
        self.pool = pool
        self._settings: tuple[Services, ClientSettings] | None = None

    def client_settings(self) -> ClientSettings:
        """The delivery settings of the running configuration (built once per reload)."""
        svc = self.services()
        if self._settings is not None and self._settings[0] is svc:
            return self._settings[1]
        settings = ClientSettings.from_config(svc.cfg)
        self._settings = (svc, settings)
        return settings

    async def close(self) -> None:
        await self.pool.close_all()

    async def route(self, domain: str, address: str) -> list[Hop] | Outcome:
        """The servers mail for ``address`` (at ``domain``) goes to, in order, or the
        outcome every recipient there gets without an SMTP attempt."""
        found = await self._route(domain, address)
        return found if isinstance(found, Outcome) else found[0]

    async def _route(self, domain: str,
                     address: str) -> tuple[list[Hop], NextHop | None] | Outcome:
        """The servers and the next hop they came from (None: the recipient domain)."""
        svc = self.services()
        cfg = svc.cfg
        try:
            tables = [svc.maps.get(spec) for spec in cfg.list("transport_maps")]
            transport, hop = route(address, tables, cfg.list("relayhost"))
        except Exception as e:
            return Outcome(DEFERRED, "4.3.0", f"transport_maps lookup failure: {e}", Stage.LOCAL)
        if transport == "error":
            return Outcome(BOUNCED, "5.0.0", str(hop or "mail for this destination is refused"),
                           Stage.TRANSPORT)
        if transport == "retry":
            return Outcome(DEFERRED, "4.0.0", str(hop or "delivery deferred by transport_maps"),
                           Stage.TRANSPORT)
        if transport == "discard":
            return Outcome(DELIVERED, "2.0.0", "discarded by transport_maps", Stage.TRANSPORT)
        assert not isinstance(hop, str)
        try:
            servers = await servers_for(
                domain,
                hop,
                resolver=svc.resolver,
                port=self.port(),
                is_myself=lambda ip, port: svc.is_own_ip(ip),
                mx_address_limit=cfg.int("smtp_mx_address_limit"),
            )
        except RouteError as e:
            return e.outcome
        return servers, hop

    def _settings_for(self, domain: str, hop: NextHop | None) -> ClientSettings | Outcome:
        """The delivery settings with this destination's smtp_tls_policy_maps entry."""
        svc = self.services()
        settings = self.client_settings()
        specs = svc.cfg.list("smtp_tls_policy_maps")
        if not specs:
            return settings
        try:
            tables = [svc.maps.get(spec) for spec in specs]
            keys = tlspolicy.keys(domain, hop.host if hop else None,
                                  hop.port if hop else None, bool(hop and not hop.mx))
            policy = tlspolicy.lookup(tables, keys)
        except Exception as e:
            return Outcome(DEFERRED, "4.7.5", f"TLS policy lookup problem: {e}", Stage.LOCAL)
        if policy is None:
            return settings
        return settings.with_policy(policy, hop.host if hop else domain)

    async def deliver(self, env: Envelope, domain: str, rcpts: list[Recipient],
                      content: Callable[[], bytes]) -> Delivery:
        found = await self._route(domain, rcpts[0].address)
        if isinstance(found, Outcome):
            return Delivery([found] * len(rcpts), [])
        servers, hop = found
        settings = self._settings_for(domain, hop)
        if isinstance(settings, Outcome):
            return Delivery([settings] * len(rcpts), [])
        outcomes = await deliver(
            servers, env.sender, rcpts, content(), env=env, settings=settings, pool=self.pool,
        )
        return Delivery(outcomes, servers)
