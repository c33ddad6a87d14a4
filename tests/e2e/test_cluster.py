"""Two backupmx nodes behind one real HAProxy, sharing one real redis-server.

Node a is mx1.tachtler.net on 127.0.0.3:P, node b mx2.tachtler.net on 127.0.0.7; both
take the PROXY header (v2) from the balancer, so both see the client 127.0.0.5, and
both name the same Redis as ``cluster_store``, verify cache and greylist store.  The
balancer goes round robin; every test reads the banner to know which node served a
session, so that "learned on one, applied on the other" is checked, not assumed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from tests.e2e.util import (
    GREYLISTED,
    NOBODY_577,
    OUTSIDE,
    Raw,
    message,
    node_b_lines,
    reload,
    strip_received,
)
from tests.peers.backupmx import BackupMX
from tests.peers.haproxy import HOST, Pool

CLUSTER = """
cluster_store = {url}
cluster_publish_interval = 1s
smtpd_upstream_proxy_protocol = haproxy
address_verify_map = {url}
greylist_store = {url}
"""

NODE_B = "myhostname = mx2.tachtler.net\n"

NAMES = {"mx1.tachtler.net": "a", "mx2.tachtler.net": "b"}
HOSTNAME = {v: k for k, v in NAMES.items()}
OTHER = {"a": "b", "b": "a"}

VERIFY_AND_GREYLIST = """
unverified_recipient_reject_code = 577
greylist_delay = 2s
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unverified_recipient,
    check_policy_service builtin:greylist,
    permit_mx_backup,
    reject_unauth_destination
"""



class Cluster(SimpleNamespace):
    a: BackupMX
    b: BackupMX
    balancer: Pool
    redis: redis.Redis


@pytest.fixture
def cluster(backupmx_factory, redis_server, tmp_path: Path) -> Iterator[Callable[[str], Cluster]]:
    pools: list[Pool] = []

    def make(extra: str = "") -> Cluster:
        config = CLUSTER.format(url=redis_server.url) + extra
        a = backupmx_factory(config, name="a")
        b = backupmx_factory(config + NODE_B + node_b_lines(), name="b")
        balancer = Pool(tmp_path / "haproxy", [(a.host, a.port), (b.host, b.port)])
        pools.append(balancer)
        balancer.start()
        return Cluster(a=a, b=b, balancer=balancer,
                       redis=redis.Redis(port=redis_server.port, decode_responses=True))

    try:
        yield make
    finally:
        for p in pools:
            p.stop()


def via(c: Cluster) -> Raw:
    """A session through the balancer from the outside client."""
    return Raw(SimpleNamespace(host=HOST, port=c.balancer.port()), source=OUTSIDE)


def node_of(banner: str) -> str:
    """Which node greeted: a or b."""
    m = re.match(r"220 (\S+) ESMTP", banner)
    assert m, banner
    return NAMES[m.group(1)]


def opened(c: Cluster) -> tuple[Raw, str]:
    s = via(c)
    banner = s.reply()
    return s, node_of(banner) if banner.startswith("220") else banner


def transaction(s: Raw, rcpts: list[str], data: bytes | None) -> list[str]:
    """EHLO, MAIL, the RCPTs (their replies) and, when one was taken, DATA; then QUIT."""
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("MAIL FROM:<sender@sender.example>") == "250 2.1.0 Ok"
    replies = [s.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    if data is not None and any(r.startswith("250") for r in replies):
        assert s.cmd("DATA").startswith("354")
        reply = s.cmd(data + b".\r\n")
        assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    assert s.cmd("QUIT").startswith("221")
    s.close()
    return replies


def probes(primary, address: str) -> int:
    want = f"RCPT TO:<{address}>".encode()
    return sum(1 for s in primary.sessions for c in s.commands if c == want)


def status_cluster(mx: BackupMX) -> dict[str, dict]:
    res = mx.cli("status", "--cluster", "--json")
    assert res.returncode == 0, res.stderr
    return {n["node"]: n for n in json.loads(res.stdout)["nodes"]}


def wait_nodes(mx: BackupMX, pred: Callable[[dict[str, dict]], bool],
               timeout: float = 15.0) -> dict[str, dict]:
    """``status --cluster --json`` of ``mx``'s configuration until ``pred`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = status_cluster(mx)
        if pred(nodes):
            return nodes
        assert time.monotonic() < deadline, nodes
        time.sleep(0.2)


def states(**want: str) -> Callable[[dict[str, dict]], bool]:
    """Each node's status and queued messages: ``a="up:1"`` for mx1, up with one."""
    names = {"a": "mx1.tachtler.net", "b": "mx2.tachtler.net"}

    def pred(nodes: dict[str, dict]) -> bool:
        got = {k: f"{n['status']}:{n['queue']['messages']}" for k, n in nodes.items()}
        return got == {names[k]: v for k, v in want.items()}
    return pred


def test_verification_and_greylisting_learned_on_one_node_apply_on_the_other(cluster, primary):
    primary.users = {"alice@nausch.org"}
    c = cluster(VERIFY_AND_GREYLIST)
    first, on = opened(c)
    assert transaction(first, ["alice@nausch.org", "nobody@nausch.org"], None) == \
        [GREYLISTED, NOBODY_577]
    assert (probes(primary, "alice@nausch.org"), probes(primary, "nobody@nausch.org")) == (1, 1)
    time.sleep(2.5)  # past greylist_delay
    second, other = opened(c)
    assert other != on  # round robin: the node that has seen neither address nor triplet
    assert transaction(second, ["alice@nausch.org", "nobody@nausch.org"],
                       message("cluster")) == ["250 2.1.5 Ok", NOBODY_577]
    assert (probes(primary, "alice@nausch.org"), probes(primary, "nobody@nausch.org")) == (1, 1)
    got = primary.wait_for(1, timeout=30)
    assert got[0].rcpts == ["alice@nausch.org"]
    node = {"a": c.a, "b": c.b}[other]
    assert "verify[" not in node.log_text()  # it never probed: node `on` did
    node.wait_log(r"greylist\[\d+\]: action=pass, reason=triplet found, delay=\d+, "
                  r"client_name=client\.example\.net, client_address=127\.0\.0\.5, ")


def test_connection_and_message_rates_hold_across_both_nodes(cluster, redis_server):
    c = cluster("smtpd_client_connection_rate_limit = 4\n"
                "smtpd_client_message_rate_limit = 2\n"
                "anvil_rate_time_unit = 120s\n")
    seen = []
    mails = []
    for _ in range(3):
        s, node = opened(c)
        seen.append(node)
        assert s.cmd("EHLO client.example.net").startswith("250")
        mails.append(s.cmd("MAIL FROM:<sender@sender.example>"))
        s.cmd("QUIT")
        s.close()
    x, y = seen[0], OTHER[seen[0]]
    assert seen == [x, y, x]  # the balancer takes them in turn
    # node x has seen 2 MAILs, within the limit on its own: the third is the cluster's
    assert mails == ["250 2.1.0 Ok", "250 2.1.0 Ok",
                     "450 4.7.1 Error: too much mail from 127.0.0.5"]
    s, node = opened(c)
    assert node == y
    s.close()
    s = via(c)  # the fifth connection; node x has had two of them
    assert s.reply() == \
        f"421 4.7.0 {HOSTNAME[x]} Error: too many connections from 127.0.0.5"
    s.close()
    {"a": c.a, "b": c.b}[x].wait_log(r"smtpd\[\d+\]: warning: too many connections from "
                                     r"127\.0\.0\.5 for client\.example\.net\[127\.0\.0\.5\]")
    assert c.redis.zcard("backupmx:anvil:rate:conn:127.0.0.5") == 5
    assert c.redis.zcard("backupmx:anvil:rate:mail:127.0.0.5") == 3
    # without Redis each node counts on its own, and says so: nobody is refused for it
    redis_server.stop()
    for name in (y, x):
        s, node = opened(c)
        assert node == name
        s.cmd("QUIT")
        s.close()
    for mx in (c.a, c.b):
        mx.wait_log(r"anvil\[\d+\]: warning: cluster_store: redis://127\.0\.0\.1:\d+/0: .*: "
                    r"counting this node's clients only")


def test_connection_count_across_nodes_and_released_at_the_end(cluster):
    c = cluster("smtpd_client_connection_count_limit = 2\n")
    one, n1 = opened(c)
    two, n2 = opened(c)
    assert n2 == OTHER[n1]
    third = via(c)
    assert third.reply() == \
        f"421 4.7.0 {HOSTNAME[n1]} Error: too many connections from 127.0.0.5"
    third.close()
    assert one.cmd("QUIT").startswith("221")
    one.close()
    deadline = time.monotonic() + 10
    while sum(map(int, c.redis.hvals("backupmx:anvil:conn:127.0.0.5"))) != 1:
        assert time.monotonic() < deadline, c.redis.hgetall("backupmx:anvil:conn:127.0.0.5")
        time.sleep(0.05)
    fourth, n4 = opened(c)
    assert n4 == n2  # in turn; the count no longer holds the session that ended
    fourth.cmd("QUIT")
    two.cmd("QUIT")


def test_a_killed_node_the_other_accepts_and_its_queue_leaves_after_restart(
    cluster, primary
):
    primary.stop()
    c = cluster()
    wait_nodes(c.a, states(a="up:0", b="up:0"))
    bodies = {}
    on = []
    for i in range(2):
        s, node = opened(c)
        on.append(node)
        bodies[f"m{i}"] = message(f"m{i}")
        transaction(s, ["alice@nausch.org"], bodies[f"m{i}"])
    assert sorted(on) == ["a", "b"]
    wait_nodes(c.a, states(a="up:1", b="up:1"))
    c.a.kill()
    for i in range(2, 4):
        s, node = opened(c)
        assert node == "b"  # the balancer's connection to a is refused and redispatched
        bodies[f"m{i}"] = message(f"m{i}")
        transaction(s, ["alice@nausch.org"], bodies[f"m{i}"])
    wait_nodes(c.b, states(a="silent:1", b="up:3"))
    text = c.b.cli("status", "--cluster")
    assert text.returncode == 0, text.stderr
    assert re.search(r"^mx1\.tachtler\.net: silent last heard \d{4}-\d\d-\d\dT\S+Z "
                     r"\(backupmx \S+, host \S+, pid \d+, listening on 127\.0\.0\.3:\d+\)$",
                     text.stdout, re.M), text.stdout
    assert re.search(r"^    queue: 3 messages, 3 recipients, oldest \S+; 0 sessions open$",
                     text.stdout, re.M), text.stdout
    primary.start()
    got = primary.wait_for(3, timeout=60)
    assert sorted(strip_received(m.data)[1] for m in got) == \
        sorted(bodies[k] for k in ("m0", "m1", "m2", "m3") if k != f"m{on.index('a')}")
    c.a.start()  # the same queue directory: its message leaves now
    got = primary.wait_for(4, timeout=60)
    assert sorted(strip_received(m.data)[1] for m in got) == sorted(bodies.values())
    assert "cluster: warning" not in c.a.log_text()  # its own earlier run is no clash
    c.b.stop()
    wait_nodes(c.a, states(a="up:0", b="stopped:0"))


def test_check_names_a_bad_cluster_store_with_file_and_line(backupmx_factory):
    mx = backupmx_factory("cluster_store = redis://127.0.0.1:70000/0\n", start=False)
    res = mx.cli("check")
    assert res.returncode == 2
    line = mx.config_text.splitlines().index("cluster_store = redis://127.0.0.1:70000/0") + 1
    assert (f"{mx.config_file}:{line}: cluster_store: redis://127.0.0.1:70000/0: bad port "
            "'70000': a number from 1 to 65535 (expected redis://HOST:PORT/DB)") in res.stderr
    alone = backupmx_factory("", start=False, name="alone")
    res = alone.cli("status", "--cluster")
    assert (res.returncode, res.stdout, res.stderr) == (
        1, "", "backupmx: status --cluster: cluster_store is not set: this node is alone\n")


def test_a_reload_that_renames_the_node_retires_the_old_record(backupmx_factory, redis_server):
    mx = backupmx_factory(CLUSTER.format(url=redis_server.url))
    wait_nodes(mx, states(a="up:0"))
    reload(mx, "cluster_node_name = mx1-renamed\n")
    nodes = wait_nodes(mx, lambda n: {k: v["status"] for k, v in n.items()} ==
                       {"mx1.tachtler.net": "stopped", "mx1-renamed": "up"})
    assert nodes["mx1-renamed"]["listen"] == [f"127.0.0.3:{mx.port}"]
    mx.wait_log(r"cluster\[\d+\]: node mx1-renamed in redis://127\.0\.0\.1:\d+/0$")
