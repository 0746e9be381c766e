"""Gateway settings (env prefix ``GRAPHWIRE_``), defaults from the seed's ``WEBSOCKET_CONFIG``.

``load_settings`` is what ``graphwire serve`` uses: besides reading the variables it
refuses an unknown ``GRAPHWIRE_*`` variable (a typo would otherwise be silently
ignored) and turns a bad value into one line naming the variable and the expected form.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

__all__ = ["PREFIX", "Settings", "SettingsProblem", "load_settings"]

PREFIX = "GRAPHWIRE_"
# Variables with our prefix that other graphwire tools read, never the gateway:
# the client CLI's, the code generator's and the test suites' (any GRAPHWIRE_TEST_*).
OTHER_TOOLS = frozenset(
    {
        "GRAPHWIRE_URL",
        "GRAPHWIRE_TOKEN",
        "GRAPHWIRE_JS_NODE_MODULES",
        "GRAPHWIRE_REGEN_GOLDEN",
        "GRAPHWIRE_CHROMIUM",
        "GRAPHWIRE_CONTRACT_PROFILE",
        "GRAPHWIRE_CONTRACT_EXAMPLES",
    }
)


class Settings(BaseSettings):
    """Every knob of the gateway; ``Settings()`` reads ``GRAPHWIRE_*`` variables."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # Gateway processes on the one port (`graphwire serve --workers`); more than one needs
    # redis_url, the only way they share groups, topics and runs (graphwire.supervisor).
    workers: int = Field(default=1, ge=1, le=1024)
    protocol_version: str = "1"
    # Seed: max_message_size 1 MiB, ping every 20 s, 20 s to answer.
    max_message_size: int = Field(default=1_048_576, ge=1024)
    ping_interval: float = Field(default=20.0, ge=0)
    ping_timeout: float = Field(default=20.0, ge=0)
    max_connections: int = Field(default=50_000, ge=1)
    # Pending TCP connections the listening socket holds (capped by net.core.somaxconn).
    backlog: int = Field(default=4096, ge=1)
    # Outbound queue bounds per connection; past either, the slow consumer is closed with 1013.
    send_queue_max_messages: int = Field(default=10_000, ge=1)
    send_queue_max_bytes: int = Field(default=16 * 1_048_576, ge=1024)
    # Fewer waiting frames than this are sent one by one; more leave as one `batch` frame,
    # which never holds more than batch_max_messages frames or batch_max_bytes.
    batch_min_messages: int = Field(default=4, ge=2)
    batch_max_messages: int = Field(default=256, ge=1)
    batch_max_bytes: int = Field(default=512 * 1024, ge=1024)
    # Under flat-out fan-out, frames wait until producers have been quiet this long, so
    # that each connection's waiting frames leave in one write (see connections.Flusher);
    # 0 writes every frame at once (no coalescing).
    flush_quiet_ms: float = Field(default=1.0, ge=0, le=100)
    # A socket that accepts no data for this long (its peer stopped reading) is closed as
    # a slow consumer with 1013, whether or not its queue has filled.
    write_timeout: float = Field(default=15.0, gt=0)
    # How long a peer has to answer our close frame before its connection is aborted
    # (closed without waiting for its unread data to drain).
    close_timeout: float = Field(default=5.0, gt=0)
    # SIGTERM: runs in flight get `workflow_failed` (gateway_shutdown), sockets get 1012;
    # whatever the clients do, the process has ended after this long.
    shutdown_grace: float = Field(default=10.0, gt=0)
    # SIGTERM: for this long first (part of the grace) `GET /ready` answers 503 draining and
    # new sockets are refused with 503, while open ones and their runs go on, so a balancer
    # that polls readiness stops sending clients here before any socket is closed.
    shutdown_delay: float = Field(default=0.0, ge=0)
    # How long a finished run's log stays for late joiners and resumes.
    run_retention_seconds: float = Field(default=3600.0, ge=0)
    # Longest log kept per run, in events and in bytes; older events are dropped and
    # resumes get `log_truncated`.
    run_log_max_events: int = Field(default=100_000, ge=10)
    run_log_max_bytes: int = Field(default=8 * 1_048_576, ge=65_536)
    # One event a node produces, as sent; a larger one fails the run with event_too_large.
    # The default is what a plain `websockets` client accepts (its max_size, 1 MiB).
    max_event_bytes: int = Field(default=1_048_576, ge=1024)
    # Runs in flight that one connection started, and in the whole gateway (too_many_runs).
    max_runs_per_connection: int = Field(default=100, ge=1)
    max_runs_in_flight: int = Field(default=10_000, ge=1)
    # With auth on, runs in flight one user (`sub`) started, across its connections.
    max_runs_per_user: int = Field(default=500, ge=1)
    # Runs watched, topics and groups of one connection, together (too_many_subscriptions).
    max_subscriptions_per_connection: int = Field(default=1_000, ge=1)
    # Worker threads for sync nodes (prep/exec/post, retry waits, hooks) of async graphs.
    node_threads: int = Field(default=32, ge=1)
    # The event loop busy for longer than this at once (an AsyncNode that blocks) is
    # logged with its workflow and node; 0 turns the watchdog off.
    loop_block_warn_ms: float = Field(default=250.0, ge=0)
    # The seed's `compression`: "deflate" negotiates permessage-deflate (RFC 7692) with
    # clients that offer it; frames are then compressed per connection.
    compression: Literal["none", "deflate"] = "none"
    # "json": one JSON object per log line, with the workflow, node, client and user it is about.
    log_format: Literal["text", "json"] = "text"
    # Extra workflows: "package.module:function", each called with the WorkflowRegistry.
    workflows: list[str] = Field(default_factory=list)
    # Auth is off until a key is set: an HS256 secret, or a PEM public key (RS256, ES256).
    # The key pins the algorithm; `aud` and `iss` are checked when these are set.
    # At least 32 bytes: RFC 7518 §3.2 wants an HS256 key as long as its hash.
    auth_jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    auth_jwt_public_key: SecretStr | None = None
    auth_audience: str | None = None
    auth_issuer: str | None = None
    # Browser Origins allowed to connect, exact "scheme://host[:port]"; "*" allows any.
    # A handshake without an Origin header (not a browser) is always allowed.
    origins: list[str] = Field(default_factory=lambda: ["*"])
    # Commands per connection and per user (with auth on), in the `limits` notation,
    # several separated by ";" (moving windows); one over gets `rate_limited`.
    rate_limit_per_connection: str = "200/second;3000/minute"
    rate_limit_per_user: str = "400/second;6000/minute"
    # Limits for one kind of command, on top of the totals: {"start_workflow": "10/second"}.
    rate_limit_per_command: dict[str, str] = Field(
        default_factory=lambda: {"start_workflow": "20/second;300/minute", "refresh_token": "10/minute"}
    )
    # A connection refused this many times the per-connection limit within its window is closed with 1008.
    rate_limit_close_after: float = Field(default=3.0, ge=1.0)
    # Many gateways, one deployment: "redis://[user:password@]host:port/db" (rediss:// for
    # TLS, unix:///path.sock) switches from the in-process broker to Redis (graphwire.broker).
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    # Longest a Redis operation may take (connect, PUBLISH, a subscription's confirmation)
    # before it counts as failed; the gateway never waits on Redis for longer.
    redis_timeout: float = Field(default=2.0, gt=0, le=60)
    # With Redis: how long a gateway's hold on a run lasts without a heartbeat (renewed every
    # third of it). A gateway that dies leaves its runs to the others after at most this.
    run_lease_seconds: float = Field(default=5.0, ge=0.5, le=300)
    # The offline mailbox: messages for a user kept while none of their connections is open
    # (group alerts, input requests of their runs, POST /api/send), at most this many each,
    # each for at most this long. In memory for one gateway, in Redis with redis_url.
    mailbox_max_messages: int = Field(default=100, ge=1, le=10_000)
    mailbox_ttl_seconds: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    # Prometheus metrics at GET /metrics (graphwire.metrics); false skips their per-frame
    # counting (and answers 404), for measuring what they cost.
    metrics: bool = True
    # Also serve GET /metrics on this port of `host`: worker i of `--workers` on
    # metrics_port + i, so that each worker is a scrape target of its own (the gateway's
    # port takes any worker).
    metrics_port: int | None = Field(default=None, ge=1, le=65_535)

    @model_validator(mode="after")
    def _delay_within_grace(self) -> Settings:
        if self.shutdown_delay >= self.shutdown_grace:
            raise ValueError(
                f"shutdown_delay ({self.shutdown_delay:g} s) must be shorter than shutdown_grace"
                f" ({self.shutdown_grace:g} s), which it is part of"
            )
        return self


class SettingsProblem(ValueError):
    """A ``GRAPHWIRE_*`` variable the gateway cannot use; the message is one line."""


# What a bad value should look like, by the field's annotation, for the one-line message.
_FORMS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


# Forms no annotation says.
_NAMED_FORMS = {"redis_url": "a URL: redis://host:6379/0, rediss://... (TLS) or unix:///path/to/redis.sock"}


def _expected(name: str) -> str:
    if name in _NAMED_FORMS:
        return _NAMED_FORMS[name]
    annotation = Settings.model_fields[name].annotation
    if annotation in _FORMS:
        return _FORMS[annotation]
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return 'a JSON list, e.g. ["package.module:function"]'
    return str(annotation)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``environ`` (default ``os.environ``) and command-line ``overrides``.

    Raises ``SettingsProblem`` for an unknown ``GRAPHWIRE_*`` variable (naming the
    closest known setting) and for a value of the wrong form.
    """
    environ = os.environ if environ is None else environ
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(PREFIX) or upper in known or upper in OTHER_TOOLS:
            continue
        if upper.startswith(PREFIX + "TEST_"):
            continue
        # Compare without the prefix, which every name shares and which would make all look close.
        names = sorted(k.removeprefix(PREFIX) for k in known)
        close = difflib.get_close_matches(upper.removeprefix(PREFIX), names, n=1, cutoff=0.6)
        hint = f"; did you mean {PREFIX}{close[0]}?" if close else "; the README's Settings lists every setting"
        raise SettingsProblem(f"unknown setting {variable}{hint}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if not error["loc"]:  # a rule between settings (shutdown_delay within shutdown_grace)
            raise SettingsProblem(str(error["msg"]).removeprefix("Value error, ")) from None
        name = str(error["loc"][0])
        variable = PREFIX + name.upper()
        value = environ.get(variable, overrides.get(name))
        expected = _expected(name) if name in Settings.model_fields else "a valid value"
        raise SettingsProblem(f"{variable}={value!r} is not valid: expected {expected} ({error['msg']})") from None
    except SettingsError as exc:
        # pydantic-settings could not parse a complex value (a list) as JSON.
        name = next((n for n in Settings.model_fields if f'"{n}"' in str(exc)), "")
        variable = PREFIX + name.upper()
        expected = _expected(name) if name else "valid JSON"
        raise SettingsProblem(f"{variable}={environ.get(variable)!r} is not valid: expected {expected}") from None
