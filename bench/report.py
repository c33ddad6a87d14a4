"""The benchmark's markdown table for docs/performance.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {
    "accept": ("≥ 5.0×", 5.0),
    "accept_tls": ("≥ 2.0×", 2.0),
    "relay": ("≥ 3.0×", 3.0),
    "drain": ("≥ 2.5×", 2.5),
    "10rcpt": ("≥ 3.0×", 3.0),
}


def _target(key: str) -> tuple[str, float]:
    """The goal of a figure: its family's, ten recipients per message its own."""
    if key.endswith("x10rcpt"):
        return TARGETS["10rcpt"]
    return TARGETS.get(key.split(":")[0], ("", 0.0))

HEADER = """# Performance: backupmx beside Postfix

`make bench` runs a private Postfix ({postfix}) and backupmx as the same backup MX on this
machine, drives both with Postfix's `smtp-source` (4 KiB messages) and receives with
`smtp-sink` as the primary; the STARTTLS figures come from bench/tlssource.py, which starts
TLS in every session (both servers use the same ECDSA P-256 certificate at security level
`may`). Each throughput figure is the median of {runs} runs, the two
servers taking turns run by run; recovery, idle sessions and the large queue are measured
once. The ratio is backupmx/Postfix from the same run. Absolute numbers are noise on a shared
machine; the ratios are the result.

Machine: {cores} cores, Linux {kernel}, filesystem {filesystem}, Python {python}; run {date}.

"""


def _label(key: str, report: dict[str, Any]) -> str:
    family, _, detail = key.partition(":")
    label = {"accept": "durable acceptance, primary down",
             "accept_tls": "acceptance over STARTTLS, primary down",
             "relay": "relay end to end",
             "drain": f"drain of {report.get('drain', 20000)} after recovery"}[family]
    if detail:
        label += f", {detail.replace('x10rcpt', ' sessions, 10 rcpt')}"
        if detail.isdigit():
            label += " sessions"
    return label


def write_markdown(report: dict[str, Any], path: Path) -> None:
    r = report["results"]
    pf, bm = r["postfix"], r["backupmx"]
    m = report["machine"]
    out = [HEADER.format(runs=report["runs"], date=report["date"], **m)]
    out.append("| figure | Postfix | backupmx | ratio | target | met |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for key in pf:
        if not isinstance(pf[key], (int, float)) or key == "recovery":
            continue
        goal, need = _target(key)
        ratio = bm.get(key, 0) / pf[key] if pf[key] else 0
        met = "yes" if ratio >= need else "no"
        out.append(f"| {_label(key, report)} (msg/s) | {pf[key]:.0f} | {bm.get(key, 0):.0f} | "
                   f"{ratio:.3f}× | {goal} | {met} |")
    if "recovery" in pf:
        out.append(f"| recovery to first delivery, no flush (s) | {pf['recovery']:.1f} | "
                   f"{bm['recovery']:.1f} | | < 2 s | "
                   f"{'yes' if bm['recovery'] < 2 else 'no'} |")
    if "idle" in pf:
        a, b = pf["idle"], bm["idle"]
        out.append(f"| idle sessions held (of {report.get('idle', 10000)}) | {a['sessions']:.0f} | "
                   f"{b['sessions']:.0f} | | all | "
                   f"{'yes' if b['sessions'] >= 10000 else 'no'} |")
        out.append(f"| RSS holding them (MiB) | {a['rss_mib']:.0f} | {b['rss_mib']:.0f} | | "
                   f"< 300 | {'yes' if b['rss_mib'] < 300 else 'no'} |")
        out.append(f"| p99 time to banner meanwhile (s) | {a['p99_banner_s']:.3f} | "
                   f"{b['p99_banner_s']:.3f} | | < 1 s | "
                   f"{'yes' if b['p99_banner_s'] < 1 else 'no'} |")
    if "queue" in pf:
        a, b = pf["queue"], bm["queue"]
        out.append(f"| 100,000 queued: RSS (MiB) | {a['rss_mib']:.0f} | {b['rss_mib']:.0f} | | "
                   f"< 500 | {'yes' if b['rss_mib'] < 500 else 'no'} |")
        out.append(f"| 100,000 queued: start to accepting (s) | {a['accept_s']:.2f} | "
                   f"{b['accept_s']:.2f} | | | |")
        out.append(f"| 100,000 queued: start to delivering (s) | {a['deliver_s']:.2f} | "
                   f"{b['deliver_s']:.2f} | | < 10 s | "
                   f"{'yes' if b['deliver_s'] < 10 else 'no'} |")
    client = {k: v for k, v in bm.get("client_cpu", {}).items() if k in pf.get("client_cpu", {})}
    if client:
        out += ["", "The STARTTLS load generator's own CPU (bench/tlssource.py, all its processes)",
                "while it drove each server, as a share of one core: well below the machine's",
                "cores means the client was not the limit.", "",
                "| figure | with Postfix | with backupmx |", "| --- | --- | --- |"]
        for key, share in client.items():
            out.append(f"| {_label(key, report)} | {pf['client_cpu'][key]:.0%} | {share:.0%} |")
    cpu_pf, cpu_bm = pf.get("cpu", {}), bm.get("cpu", {})
    shared = [key for key in cpu_pf if key in cpu_bm]
    if shared:
        out += ["", "CPU time of each server (all its processes) per message, median of the same",
                "runs: less noisy than the rates, and where a rate falls short it tells whether",
                "the CPU or the waiting is the cause.", "",
                "| figure | Postfix (ms) | backupmx (ms) | backupmx/Postfix |",
                "| --- | --- | --- | --- |"]
        for key in shared:
            a, b = cpu_pf[key], cpu_bm[key]
            out.append(f"| {_label(key, report)} | {a:.3f} | {b:.3f} | "
                       f"{b / a if a else 0:.2f}× |")
    text = "\n".join(out) + "\n"
    notes = path.with_name("performance-notes.md")
    if notes.exists():
        text += "\n" + notes.read_text()
    path.write_text(text)
