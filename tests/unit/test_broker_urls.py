"""Broker URL forms (``redis+sentinel://``, ``redis+cluster://``) and
``GATEWAY_BROKER_MIN_REPLICAS``: what settings accept, and what a bad value says."""

from __future__ import annotations

import pytest

from gateway.broker.connect import limits_storage
from gateway.broker.urls import parse
from gateway.settings import SettingsError, load_settings


def test_a_sentinel_url_names_sentinels_service_database_and_prefix() -> None:
    url = parse("redis+sentinel://:s3cret@10.0.0.1:26379,sentinel-b/chat/2?prefix=p&timeout=1")
    assert url.hosts == (("10.0.0.1", 26379), ("sentinel-b", 26379))
    assert (url.service, url.db, url.password, url.prefix) == ("chat", 2, "s3cret", "p")
    assert url.options == (("timeout", "1"),)
    assert url.address == "redis+sentinel://10.0.0.1:26379,sentinel-b:26379/chat/2"


def test_a_cluster_url_names_its_seed_nodes() -> None:
    url = parse("redis+cluster://a:7000,b?prefix=q")
    assert (url.hosts, url.prefix, url.cluster) == ((("a", 7000), ("b", 6379)), "q", True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h:1", "path is /<service>"),
        ("redis+sentinel://h:1/svc/x", "database 'x' is not a number"),
        ("redis+sentinel:///svc", "at least one host:port"),
        ("redis+sentinel://h:99999/svc", "is not host:port"),
        ("redis+cluster://h:1/0", "a cluster URL has no path"),
        ("rediss+sentinel://h:1/svc", "expected memory://"),
    ],
)
def test_bad_broker_urls_stop_the_start_naming_the_variable(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"GATEWAY_BROKER_URL: .*{message}"):
        load_settings(broker_url=url)


def test_min_replicas_needs_a_redis_broker_that_is_not_a_cluster() -> None:
    assert load_settings(broker_url="redis+sentinel://h:1/s", broker_min_replicas=1)
    assert load_settings(broker_url="redis://h:1/0", broker_min_replicas=2)
    with pytest.raises(SettingsError, match="GATEWAY_BROKER_MIN_REPLICAS: needs a Redis"):
        load_settings(broker_min_replicas=1)
    with pytest.raises(SettingsError, match="GATEWAY_BROKER_MIN_REPLICAS: not supported"):
        load_settings(broker_url="redis+cluster://h:1", broker_min_replicas=1)


def test_the_rate_limit_uses_the_limits_librarys_own_topology_forms() -> None:
    uri, options = limits_storage("redis+sentinel://:pw@h1:1,h2:2/svc/3")
    assert uri == "async+redis+sentinel://h1:1,h2:2"
    assert (options["service_name"], options["db"], options["password"]) == ("svc", 3, "pw")
    uri, options = limits_storage("redis+cluster://h1:1,h2:2?max_connections=7")
    assert (uri, options["max_connections"]) == ("async+redis+cluster://h1:1,h2:2", 7)
    with pytest.raises(ValueError, match="unsupported option 'bogus'"):
        limits_storage("redis+sentinel://h1:1/svc?bogus=1")
