"""Fixtures of the contract suite: its own ``graphwire serve`` and a probe of its health and memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contract.profiles import PROFILE
from contract.wire import STATS, GatewayProbe
from harness import Server, start_server, stop_server

# Finished runs are forgotten after this many seconds (default 1 h), so that the memory
# bound measures leaks rather than the retention window filling up.
RUN_RETENTION_SECONDS = "15"
# Generous: the fuzzers send megabyte frames and start hundreds of runs.
RSS_GROWTH_LIMIT = 100 * 2**20


@pytest.fixture(scope="session")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("contract-server"),
        env={"GRAPHWIRE_RUN_RETENTION_SECONDS": RUN_RETENTION_SECONDS},
    )
    yield running
    stop_server(running)
    log = running.log()
    assert "internal error on a frame" not in log, log[-5000:]


@pytest.fixture(scope="session")
def probe(contract_server: Server) -> Iterator[GatewayProbe]:
    gateway = GatewayProbe(contract_server, RSS_GROWTH_LIMIT)
    gateway.check()
    yield gateway
    gateway.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STATS.frames_sent or STATS.http_requests:
        terminalreporter.write_sep("-", f"graphwire contract suite ({PROFILE} profile)")
        terminalreporter.write_line(STATS.summary())
