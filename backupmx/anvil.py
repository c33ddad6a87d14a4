"""Per-client connection counts (``smtpd_client_connection_count_limit``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupmx.netlist import NetList

if TYPE_CHECKING:
    from backupmx.services import Services
    from backupmx.smtpd.session import Session


class Anvil:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self._counted: set[int] = set()

    def admit(self, session: Session, svc: Services) -> str | None:
        """Count a new session; the refusal text when over the limit."""
        ip = session.ctx.client_ip
        n = self.count.get(ip, 0) + 1
        self.count[ip] = n
        self._counted.add(id(session))
        limit = svc.cfg.int("smtpd_client_connection_count_limit")
        if limit and n > limit and not self._exempt(ip, session, svc):
            return f"too many connections from {ip}"
        return None

    def _exempt(self, ip: str, session: Session, svc: Services) -> bool:
        items = svc.cfg.list("smtpd_client_event_limit_exceptions")
        return NetList(items, svc.maps, True).match(ip, session.ctx.client_name)

    def release(self, session: Session) -> None:
        if id(session) not in self._counted:
            return
        self._counted.discard(id(session))
        ip = session.ctx.client_ip
        n = self.count.get(ip, 1) - 1
        if n <= 0:
            self.count.pop(ip, None)
        else:
            self.count[ip] = n
