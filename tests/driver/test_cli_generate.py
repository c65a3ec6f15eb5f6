"""The generate and eval commands on the golden target: llama2.c's flags, the bundled default
model, one JSON object last on stdout, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generate_cli_json(tmp_path):
    # The command line on the golden target: llama2.c's flags, one JSON object last on stdout.
    out = subprocess.run([sys.executable, "-m", "driver.cli", "generate", "-i", "The little dog", "-n", "12",
                          "-t", "0", "--target", "golden", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["prompt_tokens"] == len(res["tokens"]) - res["generated_tokens"]
    assert res["text"].startswith("The little dog")
    assert res["generated_tokens"] == 12 - res["prompt_tokens"] + 1
    assert "decode" in res["stats"]
    bad = subprocess.run([sys.executable, "-m", "driver.cli", "generate", str(tmp_path / "missing.bin"),
                          "--target", "golden", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "missing.bin" in bad.stderr
    assert json.loads(bad.stdout.strip().splitlines()[-1])["ok"] is False


def test_eval_cli_json(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("1 403 22\n7 9")
    out = subprocess.run([sys.executable, "-m", "driver.cli", "eval", "--tokens", str(ids), "--target", "golden",
                          "--logits", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res["argmax"]) == 5 and len(res["logits"]) == 5 and len(res["logits"][0]) == 512
    assert res["argmax"] == [int(np.argmax(row)) for row in res["logits"]]
    ids.write_text("1 x 2")
    bad = subprocess.run([sys.executable, "-m", "driver.cli", "eval", "--tokens", str(ids), "--target", "golden"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "token ids" in bad.stderr
