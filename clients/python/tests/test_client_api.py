"""Pure pieces of the SDK: backoff, the error mapping, the public surface, the generated layer."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

import graphwire_client
from graphwire_client import ReconnectPolicy, backoff_delay, exceptions
from graphwire_client._generated import commands, events, typed_workflows
from graphwire_client._generated.messages import Error, ErrorCode, ErrorDetail
from graphwire_client._transport import retry_after_seconds

SPEC = yaml.safe_load((Path(__file__).resolve().parents[3] / "spec" / "asyncapi.yaml").read_text(encoding="utf-8"))


# --- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 64, 5000])
def test_backoff_is_full_jitter_under_a_capped_exponential(attempt: int) -> None:
    ceiling = min(4.0, 0.5 * 2.0 ** min(attempt, 64))
    assert backoff_delay(attempt, 0.5, 4.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, 0.5, 4.0, rand=lambda: 0.5) == pytest.approx(ceiling / 2)
    assert backoff_delay(attempt, 0.5, 4.0, rand=lambda: 0.999999) < ceiling


def test_backoff_spreads_clients_over_the_whole_window() -> None:
    delays = [backoff_delay(3, 1.0, 30.0) for _ in range(2000)]
    assert 0.0 <= min(delays) < 0.5
    assert 7.5 < max(delays) <= 8.0


def test_a_retry_after_is_a_floor_under_the_jitter() -> None:
    assert backoff_delay(0, 0.5, 4.0, rand=lambda: 0.0, floor=1.0) == 1.0
    assert backoff_delay(3, 0.5, 4.0, rand=lambda: 0.5, floor=1.0) == pytest.approx(3.0)
    assert backoff_delay(3, 0.5, 4.0, rand=lambda: 0.5, floor=-2.0) == pytest.approx(2.0)
    assert ReconnectPolicy().delay(1, rand=lambda: 0.5, floor=1.0) == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("1", 1.0), (" 30 ", 30.0), ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("-1", None), (None, None)],
)
def test_retry_after_is_read_as_delay_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


def test_reconnect_policy_checks_its_values() -> None:
    assert ReconnectPolicy().delay(0, rand=lambda: 1.0) == ReconnectPolicy().base_delay
    with pytest.raises(ValueError, match="max_attempts"):
        ReconnectPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="delays"):
        ReconnectPolicy(base_delay=-1)
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, 1, 1)


# --- errors ---------------------------------------------------------------------------------


def test_every_error_code_of_the_spec_has_its_exception() -> None:
    assert [c.value for c in ErrorCode] == SPEC["components"]["schemas"]["ErrorCode"]["enum"]
    for code in ErrorCode:
        error = exceptions.error_from_frame(Error(type="error", code=code, message="m", reply_to="c1"))
        assert error.code is code
        assert isinstance(error, exceptions.ServerError)
        assert (type(error) is exceptions.ServerError) == (code in exceptions.RUN_FAILURE_CODES), code


def test_the_limits_have_their_own_exceptions() -> None:
    for code, cls in [
        (ErrorCode.too_many_runs, exceptions.TooManyRuns),
        (ErrorCode.too_many_subscriptions, exceptions.TooManySubscriptions),
    ]:
        assert type(exceptions.error_from_frame(Error(type="error", code=code, message="m"))) is cls


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (ErrorCode.gateway_shutdown, exceptions.GatewayShutdown),
        (ErrorCode.event_too_large, exceptions.EventTooLarge),
        (ErrorCode.node_error, exceptions.WorkflowFailed),
        (ErrorCode.input_timeout, exceptions.WorkflowFailed),
    ],
)
def test_a_failed_run_raises_the_workflow_failed_subclass_of_its_code(code: ErrorCode, cls: type) -> None:
    failed = exceptions.workflow_failed_error("run_1", ErrorDetail(code=code, message="m"))
    assert type(failed) is cls
    assert isinstance(failed, exceptions.WorkflowFailed)
    assert (failed.code, failed.workflow_id) == (code, "run_1")


def test_server_errors_carry_the_frame_fields() -> None:
    frame = Error(type="error", code=ErrorCode.rate_limited, message="slow down", retry_after=2.5, reply_to="c9")
    error = exceptions.error_from_frame(frame)
    assert isinstance(error, exceptions.RateLimited)
    assert (error.retry_after, error.reply_to, str(error)) == (2.5, "c9", "rate_limited: slow down")
    assert error.frame == frame


def test_every_exception_has_one_root_and_is_drawn_in_the_tree() -> None:
    tree = inspect.getdoc(exceptions) or ""
    for name in exceptions.__all__:
        obj = getattr(exceptions, name)
        if isinstance(obj, type):
            assert issubclass(obj, exceptions.GraphwireError), name
            assert name in tree, f"{name} is missing from the tree in the module docstring"


def test_run_errors_describe_the_run() -> None:
    failed = exceptions.WorkflowFailed("run_1", ErrorDetail(code=ErrorCode.node_error, message="boom", node_id="n"))
    assert (failed.code, failed.node_id) == (ErrorCode.node_error, "n")
    assert "run_1" in str(failed)
    assert "boom" in str(failed)
    assert exceptions.WorkflowCancelled("run_1", "by me").reason == "by me"
    assert exceptions.ConnectionRejected(4001).close_code == 4001
    assert "unauthorized" in str(exceptions.ConnectionRejected(4001))


# --- public surface ---------------------------------------------------------------------------


def test_the_public_surface_is_exported_and_documented() -> None:
    names = graphwire_client.__all__
    assert len(names) == len(set(names))
    for name in names:
        obj = getattr(graphwire_client, name)
        assert not name.startswith("_")
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"
    for required in ("GraphwireClient", "Run", "WorkflowFailed", "WorkflowCancelled", "ConnectionState", "messages"):
        assert required in names


def test_the_client_api_of_the_issue_exists() -> None:
    client = graphwire_client.GraphwireClient
    for method in ("start_workflow", "attach", "subscribe", "join_group", "on", "close", "connect", "ping"):
        assert inspect.iscoroutinefunction(getattr(client, method)) or method == "on", method
    for method in ("result", "respond", "cancel", "wait"):
        assert inspect.iscoroutinefunction(getattr(graphwire_client.Run, method)), method
    assert [s.value for s in graphwire_client.ConnectionState] == ["disconnected", "connecting", "connected"]


# --- the generated layer follows the spec -------------------------------------------------------


def _client_operations() -> dict[str, str]:
    """Message name → reply message name, for every client→server operation of /ws/workflow."""

    def name(ref: str) -> str:
        node = SPEC
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        if "$ref" in node:
            return name(node["$ref"])
        return str(node["name"])

    return {
        name(op["messages"][0]["$ref"]): name(op["reply"]["messages"][0]["$ref"])
        for op in SPEC["operations"].values()
        if op["action"] == "receive" and op["channel"]["$ref"] == "#/channels/workflow"
    }


def test_there_is_one_typed_method_per_client_operation() -> None:
    operations = _client_operations()
    assert operations == commands.COMMAND_REPLIES
    public = {n for n, f in inspect.getmembers(commands.Commands, inspect.iscoroutinefunction) if not n.startswith("_")}
    assert public == set(operations)


def test_events_and_workflows_follow_the_spec() -> None:
    server_events = [r["$ref"].rsplit("/", 1)[-1] for r in SPEC["components"]["schemas"]["ServerEvent"]["oneOf"]]
    assert [m.__name__ for m in events.SERVER_EVENT_TYPES.values()] == server_events
    assert {"workflow_started", "token", "input_request", "workflow_completed"} <= events.RUN_EVENT_TYPES
    assert {"connected", "subscribed", "ack", "error", "system_alert"}.isdisjoint(events.RUN_EVENT_TYPES)
    assert set(typed_workflows.WORKFLOW_NAMES) == set(SPEC["components"]["x-graphwire-workflows"])
    for name in typed_workflows.WORKFLOW_NAMES:
        assert f"{''.join(p.capitalize() for p in name.split('_'))}Workflow" in typed_workflows.__all__


def test_generated_files_carry_the_header() -> None:
    folder = Path(commands.__file__).parent
    for path in sorted(folder.glob("*.py")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# GENERATED by graphwire_codegen from spec/asyncapi.yaml sha256:"), path.name
        assert first.endswith("DO NOT EDIT")
