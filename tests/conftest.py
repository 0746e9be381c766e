"""Fixtures shared by the cross-cutting tests; the machinery lives in ``harness``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import Server, start_server, stop_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)
    assert "Traceback" not in running.log(), running.log()
