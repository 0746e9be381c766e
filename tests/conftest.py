"""Fixtures shared by the cross-cutting tests; the machinery lives in ``harness``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from balancer import RoundRobinBalancer
from cluster import CLUSTER_ENV, Clients, fresh_cluster
from harness import Server, start_server, stop_server
from redis_proc import RedisServer, start_redis


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real ``redis-server`` for the session, started by the first test that asks for it.

    Fault tests may stop, kill or restart it; ``redis_url`` brings it back for the next test.
    """
    running = start_redis(tmp_path_factory.mktemp("redis"))
    yield running
    running.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and empty (``FLUSHALL``) for this test: ``redis://127.0.0.1:N/0``."""
    if not redis_server.running:
        redis_server.restart()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    with fresh_cluster(redis_server, tmp_path_factory.mktemp("cluster"), 3, CLUSTER_ENV) as servers:
        yield servers


@pytest.fixture
def balancer(cluster: list[Server]) -> Iterator[RoundRobinBalancer]:
    with RoundRobinBalancer([s.port for s in cluster]) as running:
        yield running


@pytest.fixture
def redis_up(redis_server: RedisServer) -> RedisServer:
    if not redis_server.running:
        redis_server.start()
    return redis_server


@pytest.fixture
async def clients(balancer: RoundRobinBalancer) -> AsyncIterator[Clients]:
    made = Clients(balancer)
    yield made
    for client in made.open:
        await client.close()
