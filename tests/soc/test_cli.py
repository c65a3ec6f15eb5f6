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


def test_bench_json_reports_counters_and_roofline(sim_build):
    # `bench --json`: cycles from the core's counters, never below the roofline bound.
    r = _cli("bench", "--shape", "aidreams260K", "--positions", "2", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shape"] == "aidreams260K" and out["phase"] == "decode" and len(out["runs"]) == 2
    assert 0 < out["roofline_efficiency"] <= 1 and 0 < out["mac_utilisation"] <= 1
    assert out["cycles_per_token"] > out["weight_bytes"] / 16
    assert out["class_cycles_last"]["MATVEC"] > 0
