"""The command line's contract (DESIGN.md §8): every argument and input is checked before a
target starts; a bad one is one line on stderr naming the option, the value and what is allowed,
exit status 2, and under --json a last stdout line {"ok": false, ...}; a runtime failure exits 1;
never a traceback. Run in-process on the golden target and the bundled model."""

import contextlib
import io
import json
import time

import numpy as np
import pytest

import driver.device
from driver import cli, inputs
from driver.errors import LinkError
from driver.runtime import DEFAULT_TOKENIZER
from driver.sampling import Sampler, softmax
from driver.tokenizer import Tokenizer


def run(argv):
    """(exit status, stdout, stderr) of ``litetransformer ARGV``, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def check_contract(argv, rc, out, err):
    """What every run must show, whatever it was given."""
    assert rc in (0, 1, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    if rc:
        assert err.strip().splitlines()[-1].startswith("litetransformer"), (argv, err)
    if "--json" in argv and rc != 0:
        last = json.loads(out.strip().splitlines()[-1])
        assert last["ok"] is False and last["error"], (argv, last)
    return rc


@pytest.fixture
def no_target(monkeypatch):
    """Fails the test if anything opens a target: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a target was opened before the arguments were checked")
    monkeypatch.setattr(driver.device.Device, "open", classmethod(refuse))


# Refused before any work -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["-t", "nan"], "argument -t: temperature nan is not allowed"),
    (["-t", "nan", "-p", "1"], "argument -t: temperature nan"),
    (["-t", "inf"], "argument -t: temperature inf"),
    (["-t", "-1"], "argument -t: temperature -1.0 is out of range"),
    (["-p", "2"], "argument -p: top-p 2.0 is out of range: it must be in [0.0, 1.0]"),
    (["-p", "nan"], "argument -p: top-p nan"),
    (["-s", "-1"], "argument -s: seed -1 is out of range"),
    (["-s", str(2 ** 64)], f"argument -s: seed {2 ** 64} is out of range"),
    (["-s", str(2 ** 64 + 7)], f"argument -s: seed {2 ** 64 + 7} is out of range"),
    (["-s", "seven"], "argument -s: seed 'seven' is not an integer"),
    (["-n", "-5"], "argument -n: steps -5 is out of range: it must be >= 0 (0 = the context)"),
    (["--timeout", "0"], "argument --timeout: timeout 0.0 is out of range"),
])
def test_generate_refuses_bad_values_before_any_target(no_target, argv, says):
    full = ["generate", "--target", "golden", "--json", *argv]
    rc, out, err = run(full)
    assert check_contract(full, rc, out, err) == 2 and says in err


def test_prompt_sources_are_exclusive_and_checked(no_target, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once\nThe dog\n")
    rc, out, err = run(["generate", "--target", "golden", "-i", "hi", "--prompts-file", str(prompts)])
    assert rc == 2 and "-i or with --prompts-file, not both" in err
    rc, out, err = run(["generate", "--target", "golden", "--prompts-file", str(tmp_path / "none.txt")])
    assert rc == 2 and "does not exist" in err
    prompts.write_bytes(b"\xff\xfe bad\n")
    rc, out, err = run(["generate", "--target", "golden", "--prompts-file", str(prompts)])
    assert rc == 2 and "is not UTF-8 text" in err


def test_a_seed_whose_batch_passes_2_64_is_refused(no_target, tmp_path):
    # Sequence i samples with seed + i: the last of three would be 2**64, which xorshift64*
    # cannot hold (it used to wrap silently to the forbidden state 0).
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\nc\n")
    rc, out, err = run(["generate", "--target", "golden", "--prompts-file", str(prompts), "-s", str(2 ** 64 - 2)])
    assert rc == 2 and "for 3 sequences" in err


def test_a_long_prompt_is_refused_before_it_is_tokenised(no_target):
    # 25,000 characters cannot fit 256 positions when no piece is longer than 9 bytes; the
    # merges would take ~100 s before the length check.
    t0 = time.monotonic()
    rc, out, err = run(["generate", "--target", "golden", "-i", "word " * 5000])
    assert rc == 2 and "needs at least" in err and time.monotonic() - t0 < 5


def test_eval_refuses_ids_outside_the_vocabulary_before_any_target(no_target, tmp_path):
    ids = tmp_path / "ids.txt"
    for text, says in (("1 403 512", "token id 512 is outside the vocabulary [0, 512)"),
                       ("1 -3", "token id -3 is outside"), ("", "holds no token ids"),
                       (" ".join(["5"] * 257), "257 tokens exceed the model's context of 256")):
        ids.write_text(text)
        argv = ["eval", "--tokens", str(ids), "--target", "golden", "--json"]
        rc, out, err = run(argv)
        assert check_contract(argv, rc, out, err) == 2 and says in err


def test_bench_refuses_an_output_it_cannot_write_before_any_target(no_target, tmp_path):
    argv = ["bench", "--plot", str(tmp_path / "missing" / "roofline.png"), "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "does not exist" in err
    argv = ["bench", "--markdown", str(tmp_path), "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "is a folder" in err


def test_a_csr_map_with_a_short_row_is_named_by_line(no_target, tmp_path):
    csr = tmp_path / "csr.csv"
    csr.write_text("#--------\ncsr_base,accel,0xf0000000,,\ncsr_register,accel_config\n")
    argv = ["info", "--target", "serial:///dev/ttyUSB9", "--csr", str(csr), "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "line 3" in err and "not a csr.csv row" in err


# Every target takes what makes sense for it ------------------------------------------------------------

def test_golden_info_names_the_interpreter_and_its_parameters():
    rc, out, err = run(["info", "--target", "golden", "--json"])
    info = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and info["target"] == "golden" and info["params"]["slots"] >= 1
    assert len(info["spec_hash"]) == 8


@pytest.mark.parametrize("command", [["selftest"], ["verify", "--programs", "2"], ["bench"]])
def test_commands_that_need_hardware_refuse_golden(no_target, command):
    argv = [*command, "--target", "golden", "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "golden" in err


# Failures at run time ----------------------------------------------------------------------------------

def test_a_link_failure_exits_1(monkeypatch):
    def unreachable(*args, **kwargs):
        raise LinkError("cannot connect to socket://127.0.0.1:9: connection refused")
    monkeypatch.setattr(driver.device.Device, "open", classmethod(unreachable))
    argv = ["info", "--target", "sim://127.0.0.1:9", "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 1 and "connection refused" in err


def test_a_bug_is_one_line_not_a_traceback(monkeypatch):
    def broken(self):
        return {}["missing"]
    monkeypatch.setattr("driver.runtime.GoldenTarget.info", broken)
    argv = ["info", "--target", "golden", "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 1 and "internal error: KeyError" in err


# Sampling follows the logits ---------------------------------------------------------------------------

def test_sampling_draws_tokens_in_proportion_to_their_probabilities():
    logits = np.array([2.0, 1.0, 0.0, -1.0, 3.0], np.float32)
    for temperature in (0.5, 1.0, 2.0):
        sampler = Sampler(temperature, topp=1.0, seed=42)
        counts = np.bincount([sampler.sample(logits) for _ in range(20000)], minlength=5)
        expected = softmax(logits / temperature) * 20000
        # Within 5 standard deviations of each binomial count.
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected + 1)), (temperature, counts, expected)


def test_top_p_draws_only_from_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    sampler = Sampler(1.0, topp=0.7, seed=7)
    seen = {sampler.sample(logits) for _ in range(2000)}
    assert seen == {0, 1}               # 0.5 + 0.3 passes 0.7; 2 and 3 are outside
    sampler = Sampler(1.0, topp=0.0, seed=7)         # 0: the whole distribution
    assert {sampler.sample(logits) for _ in range(2000)} == {0, 1, 2, 3}


def test_a_vanishing_temperature_is_argmax():
    # 1e-45 makes the scaled logits overflow float32; the limit of the distribution is argmax.
    assert Sampler(1e-45, topp=0.9, seed=1).sample([0.5, 4.0, -2.0]) == 1


def test_the_tokenizers_bound_never_exceeds_the_real_count():
    tok = Tokenizer.load(DEFAULT_TOKENIZER)
    for text in ("", "a", "Once upon a time", "ünïcödé 🙂 text", "x" * 300, "The little dog ran. " * 20):
        assert tok.min_tokens(text) <= len(tok.encode(text)), text


# Models the integer formats cannot follow ---------------------------------------------------------------

def test_a_model_whose_keys_would_saturate_is_refused_unless_allowed(tmp_path):
    # Keys 40x larger than the bundled model's pass the K/V cache's range (|k| < 126.5): the
    # core would saturate them and print garbage. Refused before any upload, naming the layer;
    # --allow-lossy runs it with a warning per vector.
    from driver.model import load, save
    from driver.runtime import DEFAULT_MODEL
    model = load(DEFAULT_MODEL)
    model.weights["wk"] = model.weights["wk"] * 40
    save(model, str(tmp_path / "loud.bin"))
    argv = ["generate", str(tmp_path / "loud.bin"), "-z", DEFAULT_TOKENIZER, "--target", "golden",
            "-n", "4", "-t", "0", "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2
    assert "layer 0's keys reach" in err and "|x| < 126.504" in err and "--allow-lossy" in err
    rc, out, err = run(argv + ["--allow-lossy"])
    assert rc == 0 and "warning: layer 0's keys reach" in err


def test_weights_no_row_shift_can_hold_are_named(tmp_path):
    from driver.model import load, save
    from driver.runtime import DEFAULT_MODEL
    model = load(DEFAULT_MODEL)
    model.weights["w2"] = model.weights["w2"] * 1e-30
    save(model, str(tmp_path / "faint.bin"))
    argv = ["generate", str(tmp_path / "faint.bin"), "-z", DEFAULT_TOKENIZER, "--target", "golden", "--allow-lossy"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "tensor w2[0]: values span" in err


def test_selftest_makes_payloads_as_large_as_a_dram():
    # random.Random.randbytes(2**28) overflows a C int (an OverflowError traceback, before).
    import random
    payload = inputs.random_payload(random.Random(1), 1 << 28)
    assert len(payload) == 1 << 28 and payload[:1 << 20] == random.Random(1).randbytes(1 << 20)


# Found by probing the command line as a hostile user ---------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["generate", "-z", "", "-i", "hi"], "-z tokenizer is an empty path"),
    (["generate", "", "-i", "hi"], "model is an empty path"),
    (["generate", "/dev/zero", "-i", "hi"], "is not a regular file"),
    (["generate", "-i", "\udcff\udcfe bad"], "is not valid text"),
    (["generate", "--prompts-file", ""], "--prompts-file is an empty path"),
])
def test_paths_and_prompts_that_are_not_usable_are_refused_at_once(no_target, argv, says):
    full = [*argv, "--target", "golden", "--json", "-n", "4"]
    t0 = time.monotonic()
    rc, out, err = run(full)
    assert check_contract(full, rc, out, err) == 2 and says in err and time.monotonic() - t0 < 5


def test_a_context_as_large_as_accepted_costs_only_the_positions_run(tmp_path):
    # A v1 header may say 2**20 positions; the golden run compiles for the core's context and the
    # activation probe runs 8 positions, so nothing is sized by the header's seq_len.
    import struct
    from driver.model import MAX_CONTEXT
    from driver.runtime import DEFAULT_MODEL
    blob = bytearray(open(DEFAULT_MODEL, "rb").read())
    from driver.model import load, save
    save(load(DEFAULT_MODEL), str(tmp_path / "v1.bin"), version=1)
    blob = bytearray((tmp_path / "v1.bin").read_bytes())
    struct.pack_into("<i", blob, 8 + 6 * 4, MAX_CONTEXT)
    (tmp_path / "v1.bin").write_bytes(bytes(blob))
    argv = ["generate", str(tmp_path / "v1.bin"), "-z", DEFAULT_TOKENIZER, "--target", "golden", "-n", "4",
            "-t", "0", "--json"]
    t0 = time.monotonic()
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 0 and time.monotonic() - t0 < 30


def test_yardstick_checks_its_projections_and_page_before_measuring(no_target, tmp_path, monkeypatch):
    from driver import yardstick
    monkeypatch.setattr(yardstick, "run", lambda *a, **k: pytest.fail("measured despite bad arguments"))
    bad = tmp_path / "bench.json"
    for content, says in (('{"runs": 5}', "is not a `litetransformer bench --json` report"),
                          ("{not json", "is not a JSON file"), ("[]", "is not a `litetransformer bench")):
        bad.write_text(content)
        argv = ["yardstick", "--projections", str(bad), "--json"]
        rc, out, err = run(argv)
        assert check_contract(argv, rc, out, err) == 2 and "--projections" in err and says in err
    page = tmp_path / "page.md"
    page.write_bytes(b"\xff\xfe not text")
    argv = ["yardstick", "--markdown", str(page), "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "is not UTF-8 text" in err


def test_a_subnormal_temperature_warns_nothing():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Sampler(1e-320, topp=0.9, seed=1).sample([0.5, 4.0, 0.0]) == 1


def test_options_are_not_abbreviated(no_target):
    # --js is not --json: an abbreviation would hide a typo (and its usage error had no JSON line).
    rc, out, err = run(["generate", "--target", "golden", "--js"])
    assert rc == 2 and "unrecognized arguments: --js" in err


@pytest.mark.parametrize("argv", [["bench", "--shape", ""], ["bench", "--plot", ""], ["bench", "--markdown", ""],
                                  ["yardstick", "--projections", ""], ["yardstick", "--markdown", ""]])
def test_an_empty_value_is_not_taken_as_absent(no_target, monkeypatch, argv):
    from driver import yardstick
    monkeypatch.setattr(yardstick, "run", lambda *a, **k: pytest.fail("measured despite bad arguments"))
    rc, out, err = run([*argv, "--json"])
    assert check_contract(argv + ["--json"], rc, out, err) == 2


@pytest.mark.parametrize("target, says", [
    ("sim://host:abc", "Port could not be cast"), ("sim://127.0.0.1:99999", "out of range"),
    ("sim://127.0.0.1:1/extra?x=y", "nothing after the port"), ("serial:///dev/null?baud=abc", "baud 'abc'"),
    ("serial:///dev/null?baud=0", "baud '0'"), ("serial:///dev/null?bogus=1", "the only query is one baud=N"),
    ("serial:///dev/null?baud=9600&baud=115200", "the only query is one baud=N"),
])
def test_a_malformed_target_is_named_as_the_target(no_target, target, says):
    argv = ["info", "--target", target, "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and f"--target {target!r}" in err and says in err


def test_what_the_simulated_core_cannot_take_is_refused_before_it_starts(no_target, tmp_path):
    # The simulated SoC's core (and golden's) is known without opening it: 8 batch slots.
    prompts = tmp_path / "nine.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(9)))
    for argv, says in ((["generate", "--target", "sim", "--prompts-file", str(prompts)], "at most 8 sequences"),
                       (["bench", "--target", "sim", "--batch", "1,16"], "has 8 batch slots"),
                       (["selftest", "--target", "sim", "--offset", "3"], "--offset 0x3")):
        rc, out, err = run([*argv, "--json"])
        assert check_contract(argv + ["--json"], rc, out, err) == 2 and says in err, (argv, err)


def _board_csr(path, params, main_ram=32 << 20):
    """A csr.csv as LiteX writes one for a board build: registers, the core's parameters as
    ACCEL_PARAM_* constants and main_ram's region."""
    from spec import isa
    rows = ["csr_base,ctrl,0xf0000000,,", "csr_register,ctrl_scratch,0xf0000004,1,rw"]
    rows += [f"constant,accel_param_{key},{value},," for key, value in isa.params_constants(params).items()]
    rows += [f"memory_region,main_ram,0x40000000,{main_ram},cached"]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_a_boards_core_is_known_from_its_csr_map_before_it_is_opened(no_target, tmp_path):
    from spec import isa
    csr = _board_csr(tmp_path / "csr.csv", isa.TARGET_PARAMS["ulx3s"])
    slots = isa.TARGET_PARAMS["ulx3s"].slots
    argv = ["generate", "--target", "serial:///dev/ttyUSB0", "--csr", csr, "--json",
            *[arg for i in range(slots + 1) for arg in ("-i", f"prompt {i}")]]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and f"at most {slots} sequences" in err, err
    argv = ["bench", "--target", "serial:///dev/ttyUSB0", "--csr", csr, "--batch", f"{slots + 1}", "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and f"has {slots} batch slots" in err, err


def test_a_model_the_formats_miss_is_refused_before_a_simulator_starts(no_target, tmp_path):
    from driver.model import load, save
    from driver.runtime import DEFAULT_MODEL
    model = load(DEFAULT_MODEL)
    model.weights["wk"] = model.weights["wk"] * 40
    save(model, str(tmp_path / "loud.bin"))
    (tmp_path / "ids.txt").write_text("1 2 3")
    for command in (["generate", "-z", DEFAULT_TOKENIZER, "-i", "hi"], ["eval", "--tokens", str(tmp_path / "ids.txt")]):
        argv = [command[0], str(tmp_path / "loud.bin"), *command[1:], "--json"]
        rc, out, err = run(argv)
        assert check_contract(argv, rc, out, err) == 2 and "layer 0's keys reach" in err, err


@pytest.mark.parametrize("option", [["--csr", "csr.csv"], ["--timeout", "3"]])
def test_golden_refuses_the_options_of_a_link(no_target, option):
    argv = ["generate", "--target", "golden", *option, "-n", "2", "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and f"{option[0]} {option[1]}" in err and "golden" in err


def test_fidelity_needs_a_tokenizer_and_checks_its_prompts(tmp_path):
    import shutil
    from driver.runtime import DEFAULT_MODEL
    shutil.copy(DEFAULT_MODEL, tmp_path / "m.bin")
    argv = ["fidelity", str(tmp_path / "m.bin"), "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "pass -z TOKENIZER.bin" in err
    (tmp_path / "p.txt").write_text("word " * 5000 + "\n")
    argv = ["fidelity", "--prompts-file", str(tmp_path / "p.txt"), "--json"]
    rc, out, err = run(argv)
    assert check_contract(argv, rc, out, err) == 2 and "fidelity: the prompt" in err
