"""The HTTP side: schemathesis against the gateway's own ``/openapi.json``, every check on.

``schemathesis run`` (the CLI, in a subprocess) tests every HTTP route FastAPI
documents — ``/ws/health``, ``/ws/metrics``, ``/asyncapi.yaml``, ``/api/broadcast``,
``/api/publish`` and any route added later — in its coverage and fuzzing phases, valid
and invalid inputs, with ``--checks all``. Failures already reported and owned by
someone else are listed in ``schemathesis-baseline.json`` (schemathesis's own baseline
file): they are tolerated, anything new fails the test. Each has a strict-xfail
regression test below that passes once it is fixed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from contract.catalog import SPEC
from contract.profiles import PROFILE
from contract.wire import STATS, GatewayProbe, connected
from harness import Server

BASELINE = Path(__file__).with_name("schemathesis-baseline.json")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Test cases per operation, and a time budget for the long profile.
PHASE_ARGS = {"bounded": ["--max-examples", "40"], "fuzz": ["--max-examples", "1000", "--max-time", "600"]}[PROFILE]


def test_http_routes_keep_their_openapi(contract_server: Server, probe: GatewayProbe, tmp_path: Path) -> None:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{contract_server.http}/openapi.json",
        "--checks",
        "all",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--baseline",
        str(BASELINE),
        "--generation-database",
        "none",
        "--no-color",
        *PHASE_ARGS,
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", output)
    STATS.http_requests += int(generated.group(1)) if generated else 0
    assert done.returncode == 0, output[-6000:]
    assert re.search(r"Tested: (\d+)", output), output[-3000:]
    probe.check()


def _post(server: Server, path: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(server.http + path, data=body, headers={"content-type": "application/json"})
    STATS.http_requests += 1
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("path", ["/api/publish", "/api/broadcast"])
def test_unparsable_body_gets_a_documented_status(contract_server: Server, path: str) -> None:
    """Found by schemathesis (ST103): ``curl -X POST -H 'content-type: application/json' -d $'\\x08\\xff'``."""
    status, _ = _post(contract_server, path, b"\x08\xff")
    documented = contract_server.get_json("/openapi.json")["paths"][path]["post"]["responses"]
    assert str(status) in documented, f"{status} not in {sorted(documented)}"


async def test_publish_of_deeply_nested_data_is_never_a_server_error(
    contract_server: Server, probe: GatewayProbe
) -> None:
    """``POST /api/publish {"topic": "t", "data": {"a": {"a": ... 300 deep}}}`` with a subscriber: 500."""
    async with connected(contract_server) as subscriber:
        await subscriber.request({"type": "subscribe", "topics": ["deep"]})
        body = '{"topic": "deep", "data": ' + '{"a": ' * 300 + "1" + "}" * 300 + "}"
        status, text = _post(contract_server, "/api/publish", body.encode())
        delivered = await subscriber.barrier()  # whatever arrived must keep the spec (WireClient checks)
    probe.check()
    assert status < 500, (status, text[:200])
    assert status != 200 or [m["type"] for m in delivered] == ["topic_message"]


def test_http_routes_are_the_documented_ones(contract_server: Server) -> None:
    """Every route DESIGN.md names is in the OpenAPI document schemathesis reads."""
    paths = set(contract_server.get_json("/openapi.json")["paths"])
    assert {"/ws/health", "/ws/metrics", "/asyncapi.yaml", "/api/broadcast", "/api/publish"} <= paths, paths
    with urllib.request.urlopen(contract_server.http + "/asyncapi.yaml", timeout=10) as response:
        served = yaml.safe_load(response.read())
    assert served == SPEC, "the gateway serves another spec than spec/asyncapi.yaml"
