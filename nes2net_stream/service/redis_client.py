"""Redis clients from one URL: a single server, a Sentinel-managed master, or a Redis Cluster.

``[redis] url`` accepts these schemes:

* ``redis://``, ``rediss://`` (TLS), ``unix://``: one server, parsed by redis-py (managed Redis
  services that expose one endpoint, ACL users as ``user:password@``).
* ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/<master name>[/<db>]``:
  the master that the listed Sentinels (default port 26379) point at; fail-overs are followed.
  ``rediss+sentinel://`` uses TLS to the Sentinels and to the master.
* ``redis+cluster://[user:password@]host[:port][,host[:port]...][/0]``: a Redis Cluster
  (default port 6379) reached through any of the listed start-up nodes; ``rediss+cluster://``
  uses TLS.

Query options of every scheme: ``password_file`` (read the password from a file, e.g. a
container secret, so the URL carries none). Sentinel and cluster URLs also take
``ssl_ca_certs``, ``ssl_cert_reqs`` (``none``, ``optional``, ``required``) and, for Sentinel,
``sentinel_username``, ``sentinel_password`` and ``sentinel_password_file`` (credentials of the
Sentinels themselves; the ``user:password@`` part is for the master).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from nes2net_stream.errors import ConfigError

Kind = Literal["single", "sentinel", "cluster"]
SINGLE_SCHEMES = ("redis", "rediss", "unix")
SPECIAL_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True)}
DEFAULT_PORTS: dict[Kind, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}
_SPECIAL_OPTIONS = {"password_file", "ssl_ca_certs", "ssl_cert_reqs"}
_SENTINEL_OPTIONS = {"sentinel_username", "sentinel_password", "sentinel_password_file"}


class ClusterClient(RedisCluster):
    """``RedisCluster`` whose cluster-level failures are ``RedisError``.

    redis-py raises ``RedisClusterException``, which is not a ``RedisError``, when no start-up
    node is reachable, slots are not covered or a command's keys are in different slots;
    callers written for one server (the publisher's retry loop, ``/readyz``, the event feeds)
    handle ``RedisError``, so these failures are re-raised as one, with the cause in the message.
    """

    async def initialize(self, *args: Any, **kwargs: Any) -> ClusterClient:
        """Discover the cluster's nodes and slots."""
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise RedisError(f"Redis Cluster: {exc}") from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command on the node(s) that own it."""
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise RedisError(f"Redis Cluster: {exc}") from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        """A non-transactional pipeline; commands are sent per node, grouped by slot owner."""
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def publish(channel: Any, message: Any) -> Any:
            # redis-py refuses PUBLISH in cluster pipelines; the command itself is routed by
            # the channel's slot and Redis Cluster forwards it to subscribers on every node
            return pipe.execute_command("PUBLISH", channel, message)

        async def checked_execute(*args: Any, **kwargs: Any) -> Any:
            try:
                return await execute(*args, **kwargs)
            except RedisClusterException as exc:
                raise RedisError(f"Redis Cluster: {exc}") from exc

        pipe.execute = checked_execute
        pipe.publish = publish
        return pipe


AnyRedis = aioredis.Redis | RedisCluster


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``[redis] url``.

    Attributes:
        kind: ``single``, ``sentinel`` or ``cluster``.
        tls: connect with TLS.
        hosts: Sentinels or cluster start-up nodes (empty for ``single``).
        service_name: the Sentinel master name.
        db: database number (always 0 for a cluster).
        username: ACL user of the data nodes.
        password: password of the data nodes (from the URL or ``password_file``).
        options: the remaining query options.
        url: for ``single``: the URL handed to redis-py (``password_file`` removed).
    """

    kind: Kind
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict, repr=False)
    url: str = field(default="", repr=False)


def _scheme(url: str) -> str:
    if "://" not in url:
        raise ConfigError(f"redis.url {redact_url(url)!r}: not a URL; expected e.g. "
                          "redis://host:6379/0, redis+sentinel://host:26379/mymaster or "
                          "redis+cluster://host:6379")
    return url.split("://", 1)[0].lower()


def _read_secret(path: str, option: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"redis.url option {option}={path}: cannot read the file "
                          f"({exc.strerror or exc})") from exc
    value = text.strip("\r\n")
    if not value:
        raise ConfigError(f"redis.url option {option}={path}: the file is empty")
    return value


def _split_hosts(netloc_hosts: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc_hosts.split(","):
        part = part.strip()
        if not part:
            raise ConfigError(f"redis.url {redact_url(url)!r}: empty host in the host list")
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif part.count(":") == 1:
            host, port_text = part.split(":")
        else:
            host, port_text = part, ""
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigError(f"redis.url {redact_url(url)!r}: bad port in {part!r}") from None
        if not host or not 0 < port < 65536:
            raise ConfigError(f"redis.url {redact_url(url)!r}: bad host or port in {part!r}")
        hosts.append((host, port))
    return tuple(hosts)


def _parse_db(text: str, url: str) -> int:
    try:
        db = int(text) if text else 0
    except ValueError:
        raise ConfigError(f"redis.url {redact_url(url)!r}: database {text!r} is not a "
                          "number") from None
    if db < 0:
        raise ConfigError(f"redis.url {redact_url(url)!r}: database must be >= 0")
    return db


def _parse_single(url: str) -> RedisTarget:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    password_file = [v for k, v in query if k == "password_file"]
    if not password_file:
        return RedisTarget("single", tls=parts.scheme == "rediss", url=url)
    if parts.password:
        raise ConfigError("redis.url: give the password either in the URL or with "
                          "password_file, not both")
    rest = urlencode([(k, v) for k, v in query if k != "password_file"])
    password = _read_secret(password_file[-1], "password_file")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = quote(unquote(parts.username or ""), safe="")
    netloc = f"{user}:{quote(password, safe='')}@{netloc}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, rest, parts.fragment))
    return RedisTarget("single", tls=parts.scheme == "rediss", password=password, url=clean)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a ``[redis] url`` of any supported scheme.

    Raises:
        ConfigError: unknown scheme, bad host list, port, database or option, or an unreadable
            ``password_file``.
    """
    scheme = _scheme(url)
    if scheme in SINGLE_SCHEMES:
        return _parse_single(url)
    if scheme not in SPECIAL_SCHEMES:
        known = ", ".join(f"{s}://" for s in (*SINGLE_SCHEMES, *SPECIAL_SCHEMES))
        raise ConfigError(f"redis.url: unknown scheme {scheme}://; supported: {known}")
    kind, tls = SPECIAL_SCHEMES[scheme]
    rest = url.split("://", 1)[1]
    rest, _, query_text = rest.partition("?")
    rest = rest.split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, _, host_list = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    hosts = _split_hosts(host_list, DEFAULT_PORTS[kind], url)
    options = dict(parse_qsl(query_text, keep_blank_values=True))
    allowed = _SPECIAL_OPTIONS | (_SENTINEL_OPTIONS if kind == "sentinel" else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"redis.url: unknown option(s) {', '.join(unknown)} for {scheme}://; "
                          f"allowed: {', '.join(sorted(allowed))}")
    if "password_file" in options:
        if password:
            raise ConfigError("redis.url: give the password either in the URL or with "
                              "password_file, not both")
        password = _read_secret(options.pop("password_file"), "password_file")
    segments = [s for s in path.split("/") if s]
    service_name = ""
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise ConfigError(f"redis.url {redact_url(url)!r}: a Sentinel URL needs the master "
                              "name as its path: redis+sentinel://host:26379/mymaster[/db]")
        service_name = unquote(segments[0])
        db = _parse_db(segments[1] if len(segments) > 1 else "", url)
    else:
        if len(segments) > 1:
            raise ConfigError(f"redis.url {redact_url(url)!r}: unexpected path; a cluster "
                              "URL is redis+cluster://host:port[,host:port...]")
        db = _parse_db(segments[0] if segments else "", url)
        if db != 0:
            raise ConfigError(f"redis.url {redact_url(url)!r}: Redis Cluster has only "
                              "database 0")
    if options.get("ssl_cert_reqs", "required") not in ("none", "optional", "required"):
        raise ConfigError("redis.url option ssl_cert_reqs must be none, optional or required")
    return RedisTarget(kind, tls=tls, hosts=hosts, service_name=service_name, db=db,
                       username=username, password=password, options=options)


def _tls_kwargs(target: RedisTarget) -> dict[str, object]:
    if not target.tls:
        return {}
    kw: dict[str, object] = {"ssl": True,
                             "ssl_cert_reqs": target.options.get("ssl_cert_reqs", "required")}
    if "ssl_ca_certs" in target.options:
        kw["ssl_ca_certs"] = target.options["ssl_ca_certs"]
    return kw


def create_redis_client(url: str, *, socket_timeout: float = 5.0,
                        health_check_interval: float = 15.0,
                        decode_responses: bool = False) -> AnyRedis:
    """An asyncio Redis client for ``url`` (see the module docstring for the schemes).

    Args:
        url: the ``[redis] url``.
        socket_timeout: connect and read timeout in seconds.
        health_check_interval: idle seconds after which a connection is checked before use.
        decode_responses: return ``str`` instead of ``bytes``.

    Returns:
        ``redis.asyncio.Redis`` (single server, or a Sentinel-managed master) or
        ``redis.asyncio.cluster.RedisCluster``. Both connect lazily, on the first command.

    Raises:
        ConfigError: the URL is invalid (see :func:`parse_redis_url`).
    """
    target = parse_redis_url(url)
    common = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout,
              "health_check_interval": health_check_interval,
              "decode_responses": decode_responses}
    if target.kind == "single":
        try:
            return aioredis.Redis.from_url(target.url, **common)
        except ValueError as exc:
            raise ConfigError(f"redis.url {redact_url(url)!r}: {exc}") from exc
    auth = {"username": target.username, "password": target.password}
    tls = _tls_kwargs(target)
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        return ClusterClient(startup_nodes=nodes, **auth, **tls, **common)
    opts = target.options
    sentinel_password = opts.get("sentinel_password")
    if "sentinel_password_file" in opts:
        sentinel_password = _read_secret(opts["sentinel_password_file"],
                                         "sentinel_password_file")
    sentinel_kwargs = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout,
                       "username": opts.get("sentinel_username"),
                       "password": sentinel_password, **tls}
    sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs, **common)
    return sentinel.master_for(target.service_name, db=target.db, **auth, **tls)


def redact_url(url: str) -> str:
    """The URL with its password (and any ``*password*`` query value) replaced by ``***``."""
    head, sep, query = url.partition("?")
    if "://" in head:
        scheme, rest = head.split("://", 1)
        netloc, slash, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        if at and ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        head = f"{scheme}://{userinfo}{at}{hosts}{slash}{path}"
    if sep:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={'***' if 'password' in k and not k.endswith('_file') else v}"
                         for k, v in pairs)
    return head + sep + query
