"""The protocol's messages as pydantic models, generated from ``spec/asyncapi.yaml``.

One model per message (``Token``, ``InputRequest``, ``WorkflowCompleted`` …), closed
(``extra="forbid"``), with the spec's descriptions as docstrings; the spec's enums
(``ErrorCode``, ``CloseCode``, ``RunStatus``, ``NodeStatus``); the per-workflow params and
results (``DataProcessingParams``, ``ApprovalResult`` …); and the unions ``RunEvent`` (the
events of a run) and ``ServerEvent`` (every frame the server sends, ``batch`` unpacked).
"""

from graphwire_client._generated import messages as _models
from graphwire_client._generated.events import RunEvent as RunEvent
from graphwire_client._generated.events import ServerEvent as ServerEvent
from graphwire_client._generated.messages import *  # noqa: F403 - the generated models are this module's surface

# The generated module's own classes and aliases (not what it imports, like BaseModel).
__all__ = sorted(
    [
        name
        for name, value in vars(_models).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == _models.__name__
    ]
    + ["RunEvent", "ServerEvent"]
)
