"""Known disagreements between the spec and the gateway, tolerated by the fuzzers until resolved.

Each gap names the strict-xfail regression test that pins it: once the spec or the
gateway changes so that they agree, that test passes, fails as XPASS, and the gap is
removed from this list. Keep the list short; a gap is a bug whose fix is someone's decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["KNOWN_GAPS", "KnownGap", "known_gap", "known_result_gap"]


@dataclass(frozen=True)
class KnownGap:
    name: str
    regression_test: str
    matches: Callable[[Any, dict[str, Any]], bool]  # (the frame sent, the answer) → is it this gap?


# Empty: every disagreement found so far has been fixed (see test_regressions.py).
KNOWN_GAPS: list[KnownGap] = []


def known_gap(frame: Any, answer: dict[str, Any]) -> KnownGap | None:
    return next((gap for gap in KNOWN_GAPS if gap.matches(frame, answer)), None)


def known_result_gap(workflow: str, result: dict[str, Any]) -> str | None:
    """A `workflow_completed.result` known to break its result schema, and why (none known)."""
    del workflow, result
    return None
