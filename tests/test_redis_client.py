"""Redis URLs: single server, Sentinel and Cluster clients, against real redis-server processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from servers import free_port

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.events import OutputEvent, Source
from nes2net_stream.service.publisher import RedisConfig, RedisPublisher
from nes2net_stream.service.redis_client import (
    create_redis_client,
    parse_redis_url,
    redact_url,
)

# --------------------------------------------------------------------------- URL parsing


def test_single_server_urls_keep_their_scheme_and_tls_flag():
    assert parse_redis_url("redis://127.0.0.1:6379/0").kind == "single"
    assert parse_redis_url("rediss://user:pw@cache.example:6380/1").tls is True
    assert parse_redis_url("unix:///run/redis.sock?db=2").kind == "single"


def test_sentinel_url_hosts_default_port_master_db_and_credentials():
    t = parse_redis_url("redis+sentinel://app:p%40ss@s1,[::1]:26380,s3:1/my%20master/2"
                        "?sentinel_password=sp")
    assert t.kind == "sentinel" and t.tls is False
    assert t.hosts == (("s1", 26379), ("::1", 26380), ("s3", 1))
    assert (t.service_name, t.db, t.username, t.password) == ("my master", 2, "app", "p@ss")
    assert t.options == {"sentinel_password": "sp"}
    tls = parse_redis_url("rediss+sentinel://s1:26379/mymaster?ssl_cert_reqs=none")
    assert tls.tls is True and tls.db == 0 and tls.hosts == (("s1", 26379),)


def test_cluster_url_hosts_and_default_port():
    t = parse_redis_url("redis+cluster://:pw@10.0.0.1,10.0.0.2:7001/0")
    assert t.kind == "cluster"
    assert t.hosts == (("10.0.0.1", 6379), ("10.0.0.2", 7001))
    assert t.password == "pw" and t.username is None and t.db == 0
    assert parse_redis_url("rediss+cluster://c1:6379").tls is True


@pytest.mark.parametrize("url, message", [
    ("ftp://x", "unknown scheme ftp://"),
    ("127.0.0.1:6379", "not a URL"),
    ("redis+sentinel://s1:26379", "master name"),
    ("redis+sentinel://s1:26379/m/0/extra", "master name"),
    ("redis+sentinel://s1:26379/m/x", "database 'x' is not a number"),
    ("redis+cluster://c1:6379/3", "only database 0"),
    ("redis+cluster://c1:6379/0/1", "unexpected path"),
    ("redis+cluster://c1:port", "bad port"),
    ("redis+cluster://c1:99999", "bad host or port"),
    ("redis+cluster://c1,,c2", "empty host"),
    ("redis+cluster://c1?sentinel_password=x", "unknown option(s) sentinel_password"),
    ("redis+sentinel://s1/m?colour=red", "unknown option(s) colour"),
    ("rediss+cluster://c1?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("redis://h:notaport/0", "Port could not be cast"),
])
def test_bad_urls_raise_config_errors_naming_the_problem(url, message):
    with pytest.raises(ConfigError, match="redis.url") as err:
        create_redis_client(url)
    assert message in str(err.value)


def test_password_file_fills_the_password_of_every_scheme(tmp_path):
    secret = tmp_path / "redis_password"
    secret.write_text("s3cr#t/pw\n")
    single = parse_redis_url(f"redis://app@redis:6379/0?password_file={secret}&db=0")
    assert single.password == "s3cr#t/pw"
    assert redis.ConnectionPool.from_url(single.url).connection_kwargs["password"] == "s3cr#t/pw"
    assert "password_file" not in single.url
    assert parse_redis_url(f"redis+cluster://c1?password_file={secret}").password == "s3cr#t/pw"
    sentinel = parse_redis_url(f"redis+sentinel://s1/m?password_file={secret}")
    assert sentinel.password == "s3cr#t/pw" and "password_file" not in sentinel.options


def test_password_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        parse_redis_url(f"redis://redis?password_file={tmp_path / 'missing'}")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        parse_redis_url(f"redis+cluster://c1?password_file={empty}")
    with pytest.raises(ConfigError, match="not both"):
        parse_redis_url(f"redis://:pw@redis?password_file={empty}")


def test_redact_url_hides_passwords_only():
    assert redact_url("rediss://app:hunter2@cache:6380/0") == "rediss://app:***@cache:6380/0"
    assert (redact_url("redis+sentinel://s1,s2/m?sentinel_password=x&password_file=/run/s/p")
            == "redis+sentinel://s1,s2/m?sentinel_password=***&password_file=/run/s/p")
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_client_classes_per_scheme():
    assert type(create_redis_client("redis://127.0.0.1:1/0")).__name__ == "Redis"
    sentinel = create_redis_client("redis+sentinel://127.0.0.1:1/mymaster/3")
    assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
    assert sentinel.connection_pool.service_name == "mymaster"
    assert sentinel.connection_pool.connection_kwargs["db"] == 3
    assert isinstance(create_redis_client("redis+cluster://127.0.0.1:1"), RedisCluster)


# --------------------------------------------------------------------------- real servers


def _event(call_id: str, kind: str = "state", index: int = 0) -> OutputEvent:
    body = {"window": {"index": index}, "running": {"spoof_probability": 0.25, "windows": 1}}
    return OutputEvent(type=kind, call_id=call_id, channel="caller",
                       source=Source("websocket", "generic"), model_id="m", state="bona_fide",
                       body=body)


async def _publish_all(url: str, events: list[OutputEvent]) -> RedisPublisher:
    pub = RedisPublisher(RedisConfig(url=url, socket_timeout_s=2.0, max_backoff_s=0.2))
    await pub.start()
    for ev in events:
        pub.publish(ev)
    for _ in range(200):
        if pub.buffered == 0:
            break
        await asyncio.sleep(0.05)
    return pub


async def test_plain_url_still_publishes(redis_server, redis_client):
    events = [_event("plain-1"), _event("plain-1", "window", 0), _event("plain-1", "summary")]
    pub = await _publish_all(redis_server.url, events)
    assert await pub.ping() is True
    await pub.stop()
    alerts = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
    assert [a["event_id"] for a in alerts] == [events[0].event_id, events[2].event_id]
    assert redis_client.xlen("nes2net:scores") == 1
    assert redis_client.hget("nes2net:call:plain-1", "ended") == "1"


class _Proc:
    """A redis-server child process (master, replica, sentinel or cluster node)."""

    def __init__(self, args: list[str], port: int, password: str | None = None):
        self.port = port
        self.password = password
        self.proc = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(port=port, password=password, socket_timeout=1).ping():
                    return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server {args} did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, decode_responses=True,
                           socket_timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _node_args(port: int, workdir: Path, *extra: str) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--protected-mode", "no", *extra]


def _wait_for(check, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if check():
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_password_file_against_a_server_that_requires_it(tmp_path):
    port = free_port()
    server = _Proc(_node_args(port, tmp_path / "auth", "--requirepass", "pw-from-file"), port,
                   password="pw-from-file")
    try:
        secret = tmp_path / "pw"
        secret.write_text("pw-from-file\n")
        pub = await _publish_all(f"redis://127.0.0.1:{port}/0?password_file={secret}",
                                 [_event("auth-1")])
        assert pub.published == 1
        await pub.stop()
        bad = RedisPublisher(RedisConfig(url=f"redis://127.0.0.1:{port}/0"))
        assert await bad.ping() is False  # no password: refused, reported as not ready
        await bad.stop(grace_s=0.1)
        assert server.client().xlen("nes2net:alerts") == 1
    finally:
        server.kill()


@pytest.fixture()
def sentinel_setup(tmp_path):
    """A master, its replica and one Sentinel monitoring them as ``mymaster``."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    procs: list[_Proc] = []
    try:
        mp, rp, sp = free_port(), free_port(), free_port()
        master = _Proc(_node_args(mp, tmp_path / "m", "--repl-diskless-sync-delay", "0"), mp)
        procs.append(master)
        replica = _Proc(_node_args(rp, tmp_path / "r", "--replicaof", "127.0.0.1", str(mp)), rp)
        procs.append(replica)
        _wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up",
                  what="replication link")
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {sp}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor mymaster 127.0.0.1 {mp} 1\n"
                        "sentinel down-after-milliseconds mymaster 1000\n"
                        "sentinel failover-timeout mymaster 2000\n")
        sentinel = _Proc([str(conf), "--sentinel"], sp)
        procs.append(sentinel)
        _wait_for(lambda: sentinel.client().sentinel_slaves("mymaster"), what="replica known")
        yield master, replica, sentinel
    finally:
        for p in procs:
            p.kill()


async def test_sentinel_url_follows_a_failover(sentinel_setup):
    master, replica, sentinel = sentinel_setup
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
    pub = RedisPublisher(RedisConfig(url=url, socket_timeout_s=2.0, max_backoff_s=0.2))
    await pub.start()
    first = _event("sentinel-call")
    pub.publish(first)
    await asyncio.to_thread(_wait_for, lambda: master.client().xlen("nes2net:alerts") == 1)
    assert master.client().wait(1, 2000) == 1  # replicated before the master dies
    master.kill()
    asked = [0.0]

    def promoted() -> bool:
        """Ask for a fail-over until the replica is the master (Sentinel may answer
        NOGOODSLAVE until it has fresh INFO from the replica, or INPROG while its own
        automatic fail-over runs)."""
        client = sentinel.client()
        if int(client.sentinel_get_master_addr_by_name("mymaster")[1]) == replica.port:
            return True
        if time.monotonic() - asked[0] >= 1.0:
            asked[0] = time.monotonic()
            with contextlib.suppress(redis.ResponseError):
                client.sentinel_failover("mymaster")
        return False

    await asyncio.to_thread(_wait_for, promoted, 30, "failover")
    second = _event("sentinel-call", "summary")
    pub.publish(second)  # retried until the promoted replica takes it
    for _ in range(200):
        if pub.buffered == 0:
            break
        await asyncio.sleep(0.05)
    assert await pub.ping() is True
    await pub.stop()
    new_master = replica.client()
    assert new_master.info("replication")["role"] == "master"
    ids = [f["event_id"] for _, f in new_master.xrange("nes2net:alerts")]
    assert ids == [first.event_id, second.event_id]


def _start_cluster(tmp_path: Path) -> list[_Proc]:
    """Three master nodes covering all 16384 slots (no replicas), joined with CLUSTER MEET."""
    nodes: list[_Proc] = []
    ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
    for i, (lo, hi) in enumerate(ranges):
        port, bus = free_port(), free_port()
        nodes.append(_Proc(_node_args(port, tmp_path / f"n{i}", "--cluster-enabled", "yes",
                                      "--cluster-config-file", "nodes.conf",
                                      "--cluster-port", str(bus)), port))
        nodes[-1].bus = bus
        nodes[-1].client().execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
    for node in nodes[1:]:
        nodes[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus)
    _wait_for(lambda: all(n.client().cluster("info")["cluster_state"] == "ok" for n in nodes),
              15, "cluster state ok")
    return nodes


async def test_cluster_url_publishes_across_slots_and_pubsub_reaches_every_node(tmp_path):
    nodes = _start_cluster(tmp_path)
    try:
        url = f"redis+cluster://127.0.0.1:{nodes[0].port}"
        # a subscriber on every node: PUBLISH is forwarded across the cluster bus
        subs = []
        for n in nodes:
            ps = n.client().pubsub()
            ps.subscribe("nes2net:events")
            ps.get_message(timeout=1)
            subs.append(ps)
        calls = [f"cl-{i}" for i in range(12)]
        events = [_event(c, k) for c in calls for k in ("state", "window", "summary")]
        pub = await _publish_all(url, events)
        assert pub.published == len(events) and await pub.ping() is True
        await pub.stop()
        check = create_redis_client(url, decode_responses=True)
        alerts = await check.xrange("nes2net:alerts")
        assert [f["event_id"] for _, f in alerts] == [e.event_id for e in events
                                                       if e.type != "window"]
        assert await check.xlen("nes2net:scores") == len(calls)
        for c in calls:
            assert (await check.hgetall(f"nes2net:call:{c}"))["ended"] == "1"
            assert 0 < await check.ttl(f"nes2net:call:{c}") <= 86_400
        # one XREAD of both streams is cross-slot, unless the prefix is a hash tag
        with pytest.raises(redis.RedisError, match="same key slot"):
            await check.xread({"nes2net:alerts": "0-0", "nes2net:scores": "0-0"})
        for stream in ("alerts", "scores"):
            await check.xadd(f"{{nes2net}}:{stream}", {"event": "{}"})
        both = await check.xread({"{nes2net}:alerts": "0-0", "{nes2net}:scores": "0-0"})
        assert len(both) == 2
        await check.aclose()
        per_node = [len(n.client().keys("nes2net:call:*")) for n in nodes]
        assert sum(per_node) == len(calls)
        assert sum(1 for k in per_node if k) >= 2  # call hashes are spread over the shards
        for ps in subs:
            got = []
            deadline = time.monotonic() + 5
            while len(got) < len(events) and time.monotonic() < deadline:
                msg = ps.get_message(timeout=0.2)
                if msg and msg["type"] == "message":
                    got.append(json.loads(msg["data"])["event_id"])
            ps.close()
            # alerts are written before scores, so compare as sets (each received once)
            assert sorted(got) == sorted(e.event_id for e in events)
    finally:
        for n in nodes:
            n.kill()


async def test_unreachable_cluster_is_not_ready_and_events_stay_buffered():
    pub = RedisPublisher(RedisConfig(url=f"redis+cluster://127.0.0.1:{free_port()}",
                                     socket_timeout_s=0.5, max_backoff_s=0.2))
    await pub.start()
    pub.publish(_event("nowhere"))
    assert await pub.ping() is False
    for _ in range(200):  # redis-py retries the cluster discovery for a few seconds
        if pub.errors:
            break
        await asyncio.sleep(0.05)
    assert pub.buffered == 1 and pub.errors >= 1  # the writer retries instead of crashing
    assert pub._task is not None and not pub._task.done()
    await pub.stop(grace_s=0.2)
