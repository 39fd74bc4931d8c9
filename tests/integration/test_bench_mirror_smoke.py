"""`talos bench mirror` runs end to end with tiny sizes (checks the figures exist, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_mirror_cli_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "mirror.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "talos",
            "bench",
            "mirror",
            "-n",
            "2000",
            "--rtt-ms",
            "20",
            "--rate",
            "1000",
            "--duration",
            "2",
            "--partitions",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stderr
    figures = json.loads(out.read_text())
    for part, rtt in (("throughput", 0.0), ("rtt", 20.0)):
        copy = figures[part]
        assert copy["rtt_ms"] == rtt
        assert copy["messages"] >= 2000 and copy["msgs_per_s"] > 0 and copy["mb_per_s"] > 0
    lag = figures["lag"]
    assert lag["sent"] > 0 and lag["received"] == lag["sent"] and lag["errors"] == 0
    for key in ("lag_ms_p50", "lag_ms_p99", "lag_ms_max", "lag_msgs_p50", "lag_msgs_max"):
        assert lag[key] is not None and lag[key] >= 0
