"""The recent rejects the status page shows: bounded, grouped by stage and reply."""

from backupmx.rejects import Recent


def test_grouped_by_stage_and_reply_most_frequent_first() -> None:
    r = Recent()
    r.add("RCPT", 554, "5.7.1", now=10)
    r.add("CONNECT", 554, "5.7.1", now=11)
    r.add("RCPT", 554, "5.7.1", now=12)
    r.add("RCPT", 450, "4.7.1", now=13)
    assert r.grouped() == [
        {"stage": "RCPT", "code": 554, "dsn": "5.7.1", "count": 2, "last": 12},
        {"stage": "CONNECT", "code": 554, "dsn": "5.7.1", "count": 1, "last": 11},
        {"stage": "RCPT", "code": 450, "dsn": "4.7.1", "count": 1, "last": 13},
    ]


def test_only_the_last_ones_are_kept() -> None:
    r = Recent(limit=3)
    for i in range(5):
        r.add("RCPT", 550 + i, "5.1.1", now=i)
    assert [g["code"] for g in r.grouped()] == [552, 553, 554]
