"""graphwire_client: typed asyncio client for the graphwire gateway.

The message models in ``graphwire_client.messages`` are generated from
``spec/asyncapi.yaml``; nothing in ``_generated/`` is edited by hand.
"""

from graphwire_client import _generated
from graphwire_client._generated import messages

__all__ = ["SPEC_SHA256", "messages"]

SPEC_SHA256 = _generated.SPEC_SHA256
