"""The transformer core inside the simulated SoC (DDR3 model, serial link): random programs
against the golden model (tier b), and whole forward passes of random-weight models shaped like
../shared/models, bit-exact in logits and argmax (tier c)."""

import dataclasses

import numpy as np
import pytest

from driver.bench import SHAPES as BENCH_SHAPES
from driver.compiler import GoldenRunner, compile_model
from driver.errors import AcceleratorError, DeviceError
from driver.intforward import QuantizedModel
from driver.model import Config, random_model
from driver.runtime import DeviceRunner
from driver.verify import verify_device
from spec import isa
from spec import numerics as N

pytestmark = pytest.mark.sim

# The real checkpoints' shapes (driver.bench.SHAPES) with a 32-position context.
SHAPES = {name: dataclasses.replace(BENCH_SHAPES[bench], seq_len=32)
          for name, bench in (("aidreams260K", "aidreams260K"), ("stories260K-gqa", "stories260K"))}
# And one whose FFN is wider than a MATVEC tile (w2 runs as two column tiles, as stories42M's
# and stories110M's do).
SHAPES["wide-ffn"] = Config(dim=64, hidden_dim=N.TILE_COLS + 16, n_layers=2, n_heads=4, n_kv_heads=2,
                            vocab_size=512, seq_len=32, shared_classifier=True)


def test_core_is_present_with_the_declared_params(device):
    assert device.accel_params() == isa.TARGET_PARAMS["sim"]


def test_random_programs_on_the_soc_match_golden(device):
    # Tier b through the real path: bulk upload, core run over the DDR3 model, device CRC.
    result = verify_device(device, programs=40, seed=5000)
    assert result["programs"] == 40
    assert result["mismatches"] == 0, result.get("first_mismatch")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_forward_pass_matches_golden(device, shape):
    # Tier c: 8 decode positions of one sequence, then 4 sequences at once in 4 slots;
    # logits and argmax identical to the golden model's.
    cm = compile_model(QuantizedModel(random_model(SHAPES[shape], seed=3)), params=isa.TARGET_PARAMS["sim"])
    hw, golden = DeviceRunner(device, cm), GoldenRunner(cm)
    rng = np.random.default_rng(1)
    token = 1
    for pos in range(8):
        (lh, ah), (lg, ag) = hw.step([(token, pos)]), golden.step([(token, pos)])
        assert np.array_equal(lh, lg) and ah == ag, f"{shape} position {pos}"
        token = ah[0]
    counters = hw.counters
    assert counters["mac_busy"] > 0 and counters["bytes_read"] >= cm.total_bytes // 4
    batch = [(int(t), p) for t, p in zip(rng.integers(0, 512, 4), (0, 3, 5, 7))]
    # Regions 4-7 hold no history: their rows before each position are golden's (zeros), not
    # what earlier tests left in the shared device's DRAM there.
    device.upload(cm.kv_base(4), bytes(4 * cm.kv_bytes))
    (lh, ah), (lg, ag) = hw.step(batch, kv=[4, 5, 6, 7]), golden.step(batch, kv=[4, 5, 6, 7])
    assert np.array_equal(lh, lg) and ah == ag


def test_a_classifier_in_chunks_matches_golden(device):
    # Compiled for a 512-word scratchpad: the compact map (SILU over its input, the attention's
    # and the FFN's vectors in one range) and the classifier in chunks of 448 rows, each with
    # its STORE and an ARGMAX against the held result; two slots, logits and argmax as golden's.
    config = Config(dim=32, hidden_dim=144, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=1000, seq_len=32,
                    shared_classifier=False)
    params = dataclasses.replace(isa.TARGET_PARAMS["sim"], act_depth=512)
    cm = compile_model(QuantizedModel(random_model(config, seed=5)), params=params)
    assert cm.acts["logits"] == (64, 448)
    hw, golden = DeviceRunner(device, cm), GoldenRunner(cm)
    tokens = [7, 998]
    for pos in range(4):
        step = [(t, pos) for t in tokens]
        (lh, ah), (lg, ag) = hw.step(step), golden.step(step)
        assert np.array_equal(lh, lg) and ah == ag, f"position {pos}"
        tokens = ah


def test_core_error_is_reported_and_the_next_run_is_clean(device):
    # An illegal opcode stops the core with ILLEGAL_OP at its address; a valid run follows.
    base = 0x10_0000
    device.upload(base, isa.program_bytes([isa.encode("SETR", dst=0, addr=1), 0xEE]) + isa.pack_slots([(0, 0, 0)]))
    with pytest.raises(AcceleratorError, match="ILLEGAL_OP at 0x00100010") as e:
        device.run_program(base, base + 32, 1)
    assert e.value.code == isa.ERRORS["ILLEGAL_OP"]
    device.upload(base, isa.program_bytes([isa.encode("SETR", dst=0, addr=1), isa.encode("HALT")]))
    counters = device.run_program(base, base + 32, 1)
    assert counters["retired"] == 2


def test_access_outside_dram_is_refused(device):
    # A STORE aimed past the end of DRAM stops with WINDOW before anything is written.
    base = 0x10_0000
    end = device.dram_size
    prog = [isa.encode("STORE", src=0, n=4, m=1, addr=end - 16 + 16), isa.encode("HALT")]
    device.upload(base, isa.program_bytes(prog) + isa.pack_slots([(0, 0, 0)]))
    with pytest.raises(AcceleratorError, match="WINDOW") as e:
        device.run_program(base, base + 32, 1)
    assert e.value.addr == end & 0xffffffff


def test_a_run_given_up_on_is_waited_for_before_the_next(device):
    # The first run's timeout passes while the core still works (no watchdog): a DeviceError
    # saying so. The next run waits for that one to end before it starts, so its counters and
    # results are its own: logits and argmax as golden's.
    cm = compile_model(QuantizedModel(random_model(SHAPES["stories260K-gqa"], seed=4)), params=isa.TARGET_PARAMS["sim"])
    hw, golden = DeviceRunner(device, cm), GoldenRunner(cm)
    hw.step([(1, 0)])
    golden.step([(1, 0)])
    with pytest.raises(DeviceError, match="still busy"):
        device.run_program(cm.prog, cm.slots, 1, timeout=0.0)
    (lh, ah), (lg, ag) = hw.step([(5, 1)]), golden.step([(5, 1)])
    assert np.array_equal(lh, lg) and ah == ag
