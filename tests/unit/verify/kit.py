"""Services for the verification unit tests, with a scripted prober."""

from __future__ import annotations

import asyncio
from pathlib import Path

from backupmx import config, services
from backupmx.verify.probe import ProbeResult
from backupmx.verify.service import Verifier


class ScriptedProber:
    """Answers probes from ``answers`` (default: deliverable) after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.answers: dict[str, ProbeResult] = {}
        self.calls: list[str] = []

    async def probe(self, address: str, svc: services.Services) -> ProbeResult:
        self.calls.append(address)
        await asyncio.sleep(self.delay)
        return self.answers.get(address, ProbeResult(0, "250 2.1.5 Ok", "2.1.5", "mx[1.2.3.4]:25"))

    async def close(self) -> None:
        return None


def build(
    text: str, tmp_path: Path, delay: float = 0.0
) -> tuple[services.Services, ScriptedProber]:
    base = (
        "myhostname = mx1.tachtler.net\nmydomain = tachtler.net\nmynetworks = 127.0.0.1/32\n"
        f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/data\n"
        "relay_domains = nausch.org\n"
    )
    cfg = config.parse(base + text, str(tmp_path / "backupmx.cf"))
    svc = services.build(cfg)
    svc.verifier = Verifier(f"sqlite:{tmp_path}/verify")
    prober = ScriptedProber(delay)
    svc.verifier.prober = prober  # type: ignore[assignment]
    return svc, prober
