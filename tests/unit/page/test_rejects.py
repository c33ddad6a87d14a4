"""The recent rejects the status page shows: bounded, grouped by stage, restriction and
reply."""

from backupmx.rejects import Recent


def test_grouped_by_stage_restriction_and_reply_most_frequent_first() -> None:
    # ties: by stage, then reply code
    r = Recent()
    r.add("RCPT", "reject_rbl_client", 554, "5.7.1", now=10)
    r.add("RCPT", "reject_unauth_destination", 554, "5.7.1", now=11)
    r.add("RCPT", "reject_rbl_client", 554, "5.7.1", now=12)
    r.add("RCPT", "check_policy_service", 450, "4.7.1", now=13)
    assert r.grouped() == [
        {"stage": "RCPT", "restriction": "reject_rbl_client", "code": 554, "dsn": "5.7.1",
         "count": 2, "last": 12},
        {"stage": "RCPT", "restriction": "check_policy_service", "code": 450, "dsn": "4.7.1",
         "count": 1, "last": 13},
        {"stage": "RCPT", "restriction": "reject_unauth_destination", "code": 554,
         "dsn": "5.7.1", "count": 1, "last": 11},
    ]


def test_only_the_last_ones_are_kept() -> None:
    r = Recent(limit=3)
    for i in range(5):
        r.add("RCPT", "reject", 550 + i, "5.1.1", now=i)
    assert [g["code"] for g in r.grouped()] == [552, 553, 554]
