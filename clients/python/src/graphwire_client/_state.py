"""The client's connection state machine: disconnected → connecting → connected.

``GraphwireClient.state`` holds the current ``ConnectionState``; every transition is
announced to ``client.on("state", handler)`` as a ``StateChange``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ConnectionState", "StateChange"]


class ConnectionState(enum.StrEnum):
    """Where the client's connection stands."""

    disconnected = "disconnected"
    """Not connected: before ``connect()``, after ``close()``, or after giving up."""
    connecting = "connecting"
    """Opening a socket, or waiting to retry after a drop (runs stay open meanwhile)."""
    connected = "connected"
    """The server's ``connected`` greeting arrived; commands flow."""


@dataclass(frozen=True)
class StateChange:
    """One transition of ``GraphwireClient.state``, passed to ``on("state", ...)`` handlers."""

    old_state: ConnectionState
    new_state: ConnectionState
    attempt: int = 0
    """Consecutive failed connection attempts so far (0 once connected)."""
    error: BaseException | None = None
    """Why the previous connection ended or the attempt failed, when there is a reason."""
