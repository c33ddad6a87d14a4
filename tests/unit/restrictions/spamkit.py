"""A scripted resolver and a Services builder for the spam-defence unit tests."""

from __future__ import annotations

from pathlib import Path

from backupmx import config, services
from backupmx.dns import DnsTempError
from backupmx.restrictions.engine import Context, EvalState, evaluate

TEMP = "tempfail"


class FakeResolver:
    """Answers from a dict keyed by (name, type); the value ``TEMP`` is a temporary failure."""

    def __init__(self, records: dict[tuple[str, str], object] | None = None) -> None:
        self.records = dict(records or {})
        self.queries: list[tuple[str, str]] = []

    def _get(self, name: str, rtype: str) -> list[object]:
        self.queries.append((name, rtype))
        value = self.records.get((name.lower(), rtype), [])
        if value == TEMP:
            raise DnsTempError(name, rtype)
        assert isinstance(value, list)
        return value

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return self._get(name, "MX")  # type: ignore[return-value]

    async def a(self, name: str) -> list[str]:
        return self._get(name, "A")  # type: ignore[return-value]

    async def aaaa(self, name: str) -> list[str]:
        return self._get(name, "AAAA")  # type: ignore[return-value]

    async def txt(self, name: str) -> list[str]:
        return self._get(name, "TXT")  # type: ignore[return-value]

    async def ptr(self, ip: str) -> list[str]:
        return self._get(ip, "PTR")  # type: ignore[return-value]

    async def addresses(self, name: str) -> list[str]:
        return await self.a(name) + await self.aaaa(name)


def build(text: str, tmp_path: Path, resolver: FakeResolver | None = None) -> services.Services:
    base = (
        "myhostname = mx1.tachtler.net\nmydomain = tachtler.net\nmynetworks = 127.0.0.1/32\n"
        f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/data\n"
        "address_verify_map =\n"
    )
    cfg = config.parse(base + text, str(tmp_path / "backupmx.cf"))
    return services.build(cfg, resolver=resolver or FakeResolver())  # type: ignore[arg-type]


def ctx(**kw: object) -> Context:
    values: dict[str, object] = {
        "client_ip": "192.0.2.7", "client_name": "mail.client.example",
        "reverse_name": "mail.client.example", "helo": "mail.client.example",
        "sender": "alice@sender.example", "recipient": "bob@nausch.org",
    }
    values.update(kw)
    return Context(**values)  # type: ignore[arg-type]


async def rcpt(svc: services.Services, c: Context, st: EvalState | None = None) -> str:
    """The RCPT reply line for the recipient list alone ("250 ok" when accepted)."""
    v = await evaluate([("recipient", svc.lists["recipient"])], c, svc, st or EvalState())
    return "250 ok" if v is None or v.reply is None else v.reply.line()
