"""The host side of the decode-loop firmware without a device: the layout the Makefile and the
driver share, the mailbox's bytes, and what firmware mode refuses."""

import os
import re
import struct

import pytest

from driver import firmware
from driver.cache import PROJECT_DIR
from driver.device import Device
from driver.model import Config, random_model
from driver.runtime import GoldenTarget

CONFIG = Config(dim=32, hidden_dim=64, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=32, seq_len=16,
                shared_classifier=True)


@pytest.fixture(scope="module")
def loaded():
    return Device.open("golden").load(random_model(CONFIG, seed=1))


def test_makefile_defaults_are_the_drivers_layout():
    # A hand build (no driver) must place the firmware and the mailbox where the driver expects.
    with open(os.path.join(PROJECT_DIR, "firmware", "Makefile")) as f:
        text = f.read()
    defaults = {k: int(v, 0) for k, v in re.findall(r"^(\w+_BYTES)\s*\?=\s*(\S+)", text, re.M)}
    assert defaults == {"RESERVED_BYTES": firmware.RESERVED_BYTES, "MAILBOX_BYTES": firmware.MAILBOX_BYTES}


def test_mailbox_layout(loaded):
    # 16 header words as firmware/main.c's struct mailbox, then the prompt.
    cm = loaded.runner.cm
    blob = firmware.pack_mailbox(cm, [1, 5, 7], steps=10, kv_region=1, watchdog=99)
    words = struct.unpack(f"<{len(blob) // 4}I", blob)
    assert words[:9] == (firmware.MAILBOX_MAGIC, firmware.MAILBOX_VERSION, cm.prog_greedy, cm.slots, cm.argmax,
                         cm.kv_base(1), 10, 3, 99)
    assert words[9:16] == (0,) * 7 and words[16:] == (1, 5, 7)
    with pytest.raises(ValueError, match="prompt of 11 tokens"):
        firmware.pack_mailbox(cm, [1] * 11, steps=10)


def test_firmware_mode_refusals(loaded):
    # Sampling, several prompts and a target without a CPU are refused before anything runs.
    with pytest.raises(ValueError, match="temperature must be 0"):
        loaded.generate([1, 3], steps=8, temperature=1.0, mode="firmware")
    with pytest.raises(ValueError, match="one sequence"):
        loaded.generate([[1, 3], [1, 4]], steps=8, temperature=0.0, mode="firmware")
    with pytest.raises(ValueError, match="needs a device with a CPU"):
        loaded.generate([1, 3], steps=8, temperature=0.0, mode="firmware")
    with pytest.raises(ValueError, match="mode 'fast'"):
        loaded.generate([1, 3], steps=8, temperature=0.0, mode="fast")


def test_models_leave_the_firmware_region_free(loaded):
    # Models are compiled below the top RESERVED_BYTES of DRAM; one that would reach into them
    # is refused with a message naming the firmware.
    cm = loaded.runner.cm
    golden = GoldenTarget()
    assert cm.dram_size == golden.dram_size - firmware.RESERVED_BYTES
    golden.dram_size = cm.base + cm.total_bytes + firmware.RESERVED_BYTES - 16
    with pytest.raises(ValueError, match="kept for the decode-loop firmware"):
        golden.load(random_model(CONFIG, seed=1))
