"""The benchmark keeps working: its seconds-long smoke profile runs both servers end to end.

Speed is never asserted here (that is ``make bench``'s job); correctness is: every event
reaches every watcher exactly once on both servers, also while a stalled watcher (one that
stopped reading) is on the same run or a flooder (pings flat out) on the same gateway, and
through two gateways sharing the run through a real Redis; the rate limits stop the
flooder, and the report is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_profile(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["fanout"]
    assert {r["server"] for r in rows} == {"graphwire", "graphwire (plain client)", "raw-websockets"}
    for row in rows:
        assert (row["lost"], row["duplicates"], row["unfinished"]) == (0, 0, 0), row
        assert row["deliveries_per_s"] > 0
        if row["server"] == "graphwire (plain client)":
            assert row["batches"] == 0, "a client that did not ask for batch frames got one"
    assert set(results["idle_kb_per_connection"]) == {"graphwire", "raw-websockets"}
    (stall,) = results["stalled"]
    assert (stall["n"], stall["stalled"]) == (20, 1)
    for side in ("without", "with"):
        # The fast watchers lose nothing and get nothing twice, with the stalled one there or not.
        assert (stall[side]["lost"], stall[side]["duplicates"], stall[side]["unfinished"]) == (0, 0, 0), stall
    ((stalled,),) = stall["stalled_watchers"]
    assert stalled["server_send_queue_max"] > 0, "the stalled watcher's socket never filled"
    (flood,) = results["flood"]
    assert (flood["n"], flood["flooders"]) == (20, 1)
    for side in ("without", "with"):
        # The watchers lose nothing and get nothing twice, with the flooder there or not.
        assert (flood[side]["lost"], flood[side]["duplicates"], flood[side]["unfinished"]) == (0, 0, 0), flood
    assert not flood["rate_limits"]["overridden"], "the flood row runs the default rate limits"
    ((flooder,),) = flood["flooder_reports"]
    assert flooder["pongs"] > 0, flooder  # answered up to its limit, not refused outright
    # Flat out is far past the default 200/s: it is refused (rate_limited) or closed (1008).
    assert flooder["rate_limited"] > 0 or "1008" in flooder["close_codes"], flooder
    cluster = {r["mode"]: r for r in results["cluster"]}
    assert set(cluster) == {"paced", "flat"}
    for row in cluster.values():
        assert row["n"] == 20
        for side in ("single", "cluster"):
            # One gateway, or two on Redis with half the watchers on B: nothing lost or doubled.
            assert (row[side]["lost"], row[side]["duplicates"], row[side]["unfinished"]) == (0, 0, 0), row
            assert row[side]["server_cpu_s_per_100k"] >= 0
        # Both gateways' watchers were measured: half the deliveries crossed Redis.
        assert all(p99 > 0 for p99 in row["cluster_p99_ms_a_b"]), row
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| flat | 20 | graphwire |" in report
    assert "## A stalled watcher among fast ones" in report
    assert "## A flooding client among watchers" in report
    assert "## Cluster: the same fan-out through two gateways and Redis" in report
    assert "| paced | 20 | 20 every 5 ms |" in report
    # Each table has its own row (both start "| 20 | 1 |", so look in each section).
    stalled_section, flood_section = report.split("## A stalled watcher among fast ones", 1)[1].split(
        "## A flooding client among watchers", 1
    )
    assert "| 20 | 1 | " in stalled_section
    assert "| 20 | 1 | " in flood_section
    (metrics,) = results["metrics"]
    assert metrics["n"] == 20
    for side in ("off", "on"):
        # Metrics on or off, the watchers lose nothing and get nothing twice.
        assert (metrics[side]["lost"], metrics[side]["duplicates"], metrics[side]["unfinished"]) == (0, 0, 0), metrics
    assert "## What Prometheus metrics cost" in (tmp_path / "RESULTS.md").read_text()
