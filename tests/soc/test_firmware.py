"""The decode-loop firmware on the simulated SoC's CPU (driver.firmware, firmware/): the same
greedy tokens as the host-driven loop, refusals, and core errors reported through the console."""

import pytest

from driver.errors import AcceleratorError
from driver.firmware import Firmware
from driver.model import Config, random_model
from spec import isa

pytestmark = pytest.mark.sim

# No skip when the RISC-V GCC is missing: the simulator's BIOS needs it too, and the `device`
# fixture fails with the setup instruction (scripts/setup.sh installs it).

CONFIG = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=48,
                shared_classifier=False)
PROMPT = [1, 17, 40, 5]
STEPS = 20


@pytest.fixture(scope="module")
def loaded(device):
    return device.load(random_model(CONFIG, seed=7, scale=0.4))


@pytest.fixture(scope="module")
def host_result(loaded):
    return loaded.generate(PROMPT, steps=STEPS, temperature=0.0)


def test_firmware_tokens_equal_host_tokens(loaded, host_result):
    # Same prompt, same steps: the CPU's loop feeds back the same ARGMAX as the host's loop.
    streamed = []
    fw = loaded.generate(PROMPT, steps=STEPS, temperature=0.0, mode="firmware",
                         on_token=lambda i, token, text: streamed.append(token))
    host, mine = host_result["sequences"][0], fw["sequences"][0]
    assert len(host["tokens"]) > len(PROMPT) + 4, "the test model stops too early to compare much"
    assert mine["tokens"] == host["tokens"]
    assert mine["stop"] == host["stop"]
    assert streamed == mine["tokens"][len(PROMPT):]
    stats = fw["stats"]
    assert stats["prefill"]["positions"] == len(PROMPT)
    assert stats["prefill"]["cycles"] > 0 and stats["decode"]["cycles"] > 0


def test_firmware_mode_refuses_sampling(loaded):
    # The firmware only has the device's ARGMAX: a temperature is refused before anything runs.
    with pytest.raises(ValueError, match="temperature must be 0"):
        loaded.generate(PROMPT, steps=STEPS, temperature=0.8, mode="firmware")


def test_core_error_is_reported_and_the_next_run_is_clean(loaded, host_result):
    # A forced token outside the vocabulary stops the core with BAD_TOKEN; the firmware reports
    # it on the console and serves the next request normally.
    fw = Firmware.start(loaded.runner.device)
    with pytest.raises(AcceleratorError, match="BAD_TOKEN") as e:
        fw.run(loaded.runner.cm, [1, CONFIG.vocab_size + 3], steps=4)
    assert e.value.code == isa.ERRORS["BAD_TOKEN"]
    again = loaded.generate(PROMPT, steps=STEPS, temperature=0.0, mode="firmware")
    assert again["sequences"][0]["tokens"] == host_result["sequences"][0]["tokens"]
