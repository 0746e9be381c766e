"""Hypothesis settings for the contract suite: a bounded profile for ``make test``, a long one for ``make fuzz``.

The profile comes from ``GRAPHWIRE_CONTRACT_PROFILE`` (``bounded``, the default, or
``fuzz``); ``GRAPHWIRE_CONTRACT_EXAMPLES`` overrides its examples per property. It is
applied per test through ``contract_settings``, never loaded globally, so hypothesis
tests elsewhere in the repository keep their own settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["PROFILE", "SCALE", "contract_settings"]

PROFILE = os.environ.get("GRAPHWIRE_CONTRACT_PROFILE", "bounded")
if PROFILE not in ("bounded", "fuzz"):
    raise ValueError(f"GRAPHWIRE_CONTRACT_PROFILE must be 'bounded' or 'fuzz', not {PROFILE!r}")

# Examples per property; each test takes a fraction of it (a state machine run costs more
# than a frame, and the live fuzzers have one property per message and mode).
SCALE = int(os.environ.get("GRAPHWIRE_CONTRACT_EXAMPLES") or 0) or {"bounded": 300, "fuzz": 5000}[PROFILE]
# Failing examples are saved here (git-ignored) and replayed first on the next run.
_DATABASE = DirectoryBasedExampleDatabase(Path(__file__).resolve().parents[2] / "test-artifacts" / "hypothesis")

settings.register_profile(
    "graphwire-contract",
    max_examples=SCALE,
    # Each example is a round trip to another process; wall time varies with the machine's load.
    deadline=None,
    database=_DATABASE,
    print_blob=True,
    # One bug at a time: a second one found while shrinking the first is usually the same bug.
    report_multiple_bugs=False,
    # Network examples are slow by nature, and schema-driven messages can be large.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # The explain phase reruns the failing example many times over the network; shrinking is enough.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


def contract_settings(fraction: float = 1.0, **overrides: object) -> settings:
    """The profile's settings with ``max_examples`` scaled by ``fraction`` (at least 10)."""
    base = settings.get_profile("graphwire-contract")
    return settings(base, max_examples=max(10, int(SCALE * fraction)), **overrides)  # type: ignore[arg-type]
