"""The command line against the simulated SoC, as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.sim
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "driver.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_selftest_json(sim_build):
    # selftest's last stdout line is one JSON object; the device CRC equals the host's.
    r = _cli("selftest", "--target", "sim", "--bytes", "300000", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["bytes"] == 300000
    assert result["host_crc"] == result["device_crc"]
    assert result["readback_ok"] is True
    assert 0 < result["bytes_per_cycle"] <= 1.0     # a byte-wide link moves at most one byte a cycle
    assert result["bytes_per_second"] > 0


def test_info_json_and_bad_target(sim_build):
    # info reports the spec; an unknown target scheme is a one-line error with exit code 2.
    r = _cli("info", "--target", "sim", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["dram_bytes"] == 256 * 1024 * 1024 and info["clock_hz"] == 100_000_000
    r = _cli("info", "--target", "tcp://nowhere")
    assert r.returncode == 2 and "unknown target" in r.stderr


def test_bench_json_batches_phases_and_cpu(sim_build):
    # `bench --json`: one run per (phase, batch) from the core's counters, never faster than the
    # roofline bound; the batch speedup is the ratio of the runs' tokens per cycle; the C
    # baseline ran on the same shape.
    r = _cli("bench", "--shape", "stories260K", "--batch", "1,2", "--positions", "2", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    runs = {(run["phase"], run["batch"]): run for run in out["runs"]}
    assert set(runs) == {("prefill", 1), ("prefill", 2), ("decode", 1), ("decode", 2)}
    for run in out["runs"]:
        assert run["shape"] == "stories260K"
        assert 0 < run["roofline_efficiency"] <= 1 and 0 < run["mac_utilisation"] <= 1
        assert run["cycles_per_token"] >= run["roofline_bound_cycles_per_token"]
        assert run["tokens_per_cycle"] == pytest.approx(1 / run["cycles_per_token"], rel=1e-4)
        assert run["class_cycles_per_token"]["MATVEC"] > 0
        base = runs[run["phase"], 1]["tokens_per_cycle"]
        assert run["batch_speedup"] == pytest.approx(run["tokens_per_cycle"] / base, abs=1e-3)
    assert runs["decode", 2]["batch_speedup"] > 1          # the weights are read once for both slots
    assert out["simulator"][0]["cycles_per_second"] > 0
    assert out["cpu"][0]["shape"] == "stories260K" and out["cpu"][0]["tokens_per_s"] > 0


def test_bench_refuses_batch_above_the_cores_slots(sim_build):
    # The simulated core has 8 slots: --batch 16 is refused before any upload.
    r = _cli("bench", "--shape", "stories260K", "--batch", "1,16", "--no-cpu")
    assert r.returncode == 2 and "8 batch slots" in r.stderr
