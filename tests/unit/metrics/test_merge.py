"""Adding up the registries of several processes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backupmx.metrics.merge import Sum
from backupmx.restrictions.policy import action_label


def process(rejects: int, commits: list[float]) -> str:
    """One process's registry with the shape of backupmx's instruments, as text."""
    reg = CollectorRegistry(auto_describe=False)
    c = Counter("backupmx_smtpd_rejects", "doc", ["class"], registry=reg)
    for _ in range(rejects):
        c.labels("5xx").inc()
    h = Histogram("backupmx_spool_commit_seconds", "doc", buckets=(0.01, 0.1), registry=reg)
    for v in commits:
        h.observe(v)
    return generate_latest(reg).decode()


def samples(total: Sum) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(total)
    text = generate_latest(reg).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_counters_and_buckets_add_up_across_processes() -> None:
    total = Sum()
    total.add_text(process(2, [0.005]))
    total.add_text(process(3, [0.05, 0.5]))
    got = samples(total)
    assert got[("backupmx_smtpd_rejects_total", (("class", "5xx"),))] == 5
    assert got[("backupmx_spool_commit_seconds_bucket", (("le", "0.01"),))] == 1
    assert got[("backupmx_spool_commit_seconds_bucket", (("le", "0.1"),))] == 2
    assert got[("backupmx_spool_commit_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("backupmx_spool_commit_seconds_count", ())] == 3
    assert abs(got[("backupmx_spool_commit_seconds_sum", ())] - 0.555) < 1e-9


def test_a_sum_of_sums_is_the_same_sum() -> None:
    retired = Sum()
    retired.add_text(process(4, []))
    total = Sum()
    total.add_text(process(1, []))
    total.add(retired.collect())
    assert samples(total)[("backupmx_smtpd_rejects_total", (("class", "5xx"),))] == 5


def test_a_family_without_samples_is_kept() -> None:
    total = Sum()
    total.add_text(process(0, []))
    assert ("backupmx_spool_commit_seconds_count", ()) in samples(total)


def test_policy_actions_are_a_bounded_label() -> None:
    assert action_label("DEFER_IF_PERMIT Greylisted, see http://x") == "DEFER_IF_PERMIT"
    assert action_label("prepend X-Greylist: delayed 3 seconds") == "PREPEND"
    assert action_label("450 4.7.1 slow down") == "4XX"
    assert action_label("whatever the server made up") == "other"
    assert action_label("") == "other"
