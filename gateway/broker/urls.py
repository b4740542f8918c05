"""Broker URLs, parsed without importing any client library: settings validate with it.

The forms are the `limits` library's, so one ``GATEWAY_BROKER_URL`` also names the rate limit's
storage: ``redis://host:port/db``, ``redis+sentinel://[:password@]host:port[,host:port…]/service
[/db]``, ``redis+cluster://[:password@]host:port[,host:port…]``. ``?prefix=`` namespaces every
key and channel (several deployments, or test runs, can share one Redis); the other query
options are redis-py's (``max_connections``, ``timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

DEFAULT_PREFIX = "gateway"
SENTINEL_PORT = 26379
REDIS_SCHEMES = frozenset({"redis", "rediss"})
SENTINEL_SCHEMES = frozenset({"redis+sentinel"})
CLUSTER_SCHEMES = frozenset({"redis+cluster"})
SCHEMES = frozenset({"memory"}) | REDIS_SCHEMES | SENTINEL_SCHEMES | CLUSTER_SCHEMES
FORMS = (
    "memory://, redis://host:port/db, redis+sentinel://host:port[,host:port…]/service[/db] "
    "or redis+cluster://host:port[,host:port…]"
)


@dataclass(frozen=True, slots=True)
class BrokerURL:
    scheme: str
    url: str
    """The URL without ``prefix``: what redis-py (plain Redis) or `limits` is given."""
    prefix: str
    hosts: tuple[tuple[str, int], ...] = ()
    """Sentinels' addresses."""
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def sentinel(self) -> bool:
        return self.scheme in SENTINEL_SCHEMES

    @property
    def cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES

    @property
    def address(self) -> str:
        """Names the Redis (service and database) itself: equal for every client on it."""
        if self.sentinel or self.cluster:
            hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
            return f"{self.scheme}://{hosts}/{self.service}/{self.db}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def split_url(url: str) -> tuple[str, str]:
    """``…?prefix=p&rest`` -> (``…?rest``, ``p`` or the default prefix)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for key, value in query if key == "prefix"), "") or DEFAULT_PREFIX
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def parse(url: str) -> BrokerURL:
    """Raises ``ValueError`` naming what is wrong, for the settings' one-line message."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"expected {FORMS}")
    stripped, prefix = split_url(url)
    if scheme not in SENTINEL_SCHEMES | CLUSTER_SCHEMES:
        return BrokerURL(scheme, stripped, prefix)
    parts = urlsplit(stripped)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    default_port = SENTINEL_PORT if scheme in SENTINEL_SCHEMES else 6379
    hosts = tuple(_host(item, default_port) for item in hostlist.split(",") if item)
    if not hosts:
        raise ValueError(f"a {scheme} URL needs at least one host:port")
    path = [segment for segment in parts.path.split("/") if segment]
    if scheme in CLUSTER_SCHEMES:
        if path:
            raise ValueError("a cluster URL has no path: a cluster has one database")
        return BrokerURL(
            scheme,
            stripped,
            prefix,
            hosts=hosts,
            username=unquote(username) or None,
            password=unquote(password) or None,
            options=tuple(parse_qsl(parts.query)),
        )
    if not path or len(path) > 2:
        raise ValueError("a sentinel URL's path is /<service> or /<service>/<db>")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"database {path[1]!r} is not a number")
    return BrokerURL(
        scheme,
        stripped,
        prefix,
        hosts=hosts,
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        options=tuple(parse_qsl(parts.query)),
    )


def _host(item: str, default_port: int) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    if not colon:
        host, port = item, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r} is not host:port")
    return host.strip("[]"), int(port)
