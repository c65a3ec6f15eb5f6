"""Link faults at any byte of a decode step (property-based, through a TCP proxy in front of the
simulated SoC): a flipped bit, lost bytes, a pause or a cut connection anywhere in either
direction gives a clear error or golden's result, in bounded time; the step retried after an
error gives golden's result; what no run writes (the weights, the programs) is intact after it."""

import os
import zlib

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

from driver.compiler import GoldenRunner, compile_model
from driver.device import Device
from driver.errors import DeviceError, LinkError
from driver.intforward import QuantizedModel
from driver.model import Config, random_model
from driver.runtime import DeviceRunner
from spec import isa
from tests.soc.tcp_proxy import FaultyProxy

pytestmark = pytest.mark.sim

CONFIG = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=16,
                shared_classifier=True)
STEP = [(5, 0), (9, 0)]


@pytest.fixture(scope="module")
def rig(sim_build):
    from soc.sim import SimProcess
    sim = SimProcess(sim_build)
    proxy = FaultyProxy(sim.port)
    dev = Device.open(f"sim://127.0.0.1:{proxy.port}", csr=sim_build.csr_csv, timeout=2)
    cm = compile_model(QuantizedModel(random_model(CONFIG, seed=11)), params=isa.TARGET_PARAMS["sim"])
    hw = DeviceRunner(dev, cm)
    expected = GoldenRunner(cm).step(STEP)
    # How many bytes one step sends each way, so that the faults land inside a step.
    up, down = dev.link.bytes_sent, dev.link.bytes_received
    assert _same(hw.step(STEP), expected)
    extent = {"up": dev.link.bytes_sent - up, "down": dev.link.bytes_received - down}
    yield dev, proxy, hw, cm, expected, extent, sim
    dev.close()
    proxy.close()
    sim.stop()


def _same(got, want):
    return np.array_equal(got[0], want[0]) and list(got[1]) == list(want[1])


@settings(max_examples=6 if os.environ.get("LT_FUZZ", "ci") == "ci" else 60, deadline=None)   # ~20 s each
@given(kind=st.sampled_from(["garble", "drop", "delay", "disconnect"]), direction=st.sampled_from(["up", "down"]),
       where=st.floats(0, 1, exclude_max=True))
def test_a_fault_anywhere_in_a_step_is_an_error_or_the_right_result(rig, kind, direction, where):
    dev, proxy, hw, cm, expected, extent, sim = rig
    proxy.arm(kind, direction, int(where * extent[direction]))
    try:
        got = hw.step(STEP)
        event("the step went through")
    except (LinkError, DeviceError) as e:
        event(f"the step failed: {type(e).__name__}")
        assert sim.alive(), "the fault killed the simulator"
        got = hw.step(STEP)                  # the retry recovers the link and runs the step again
    proxy.fault = None
    assert _same(got, expected)
    start, end = cm.constant_range()
    assert dev.checksum(start, end - start) == zlib.crc32(cm.image[start - cm.base:end - cm.base])
