"""The classroom load benchmark, small and bounded: several gradio_client users at once on a real app.

Not a timing test (latencies depend on the machine): it checks what must hold at any speed: every request
is answered without error, no user ever receives another user's state, and the server is still up.
The figures for 30 users are printed by `python benchmarks/app_load.py` (docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(ROOT, "benchmarks", "app_load.py")
EXPECTED_ENDPOINTS = {"/select_run", "/point", "/reconstruct", "/interpolate_frame", "/attribute_edit",
                      "/live_traversal", "/sample"}


def run_benchmark(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, BENCHMARK, *args], capture_output=True, text=True, timeout=400,
                          env=env, cwd=ROOT)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert done.returncode == 0, json.dumps(report, indent=1)[:3000]
    return report


def test_concurrent_users_get_answers_and_only_their_own_state():
    report = run_benchmark("--users", "6", "--seconds", "8", "--clients-nice", "0")
    assert report["errors"] == 0, report["first_errors"]
    assert report["state_violations"] == 0, report["first_violations"]
    assert report["server_alive_after"] is True
    assert EXPECTED_ENDPOINTS <= set(report["latency"]), sorted(report["latency"])
    # Every user completed at least one whole loop (a select_run each, and more requests than that).
    assert report["latency"]["/select_run"]["n"] >= 6
    assert report["requests_served"] > 6 * len(EXPECTED_ENDPOINTS)
