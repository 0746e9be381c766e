"""Gateway settings (env prefix ``GRAPHWIRE_``), defaults from the seed's ``WEBSOCKET_CONFIG``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every knob of the gateway; ``Settings()`` reads ``GRAPHWIRE_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="GRAPHWIRE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
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
    # How long a finished run's log stays for late joiners and resumes.
    run_retention_seconds: float = Field(default=3600.0, ge=0)
    # Longest log kept per run; older events are dropped and resumes get `log_truncated`.
    run_log_max_events: int = Field(default=100_000, ge=10)
    permessage_deflate: bool = False
    # Extra workflows: "package.module:function", each called with the WorkflowRegistry.
    workflows: list[str] = Field(default_factory=list)
