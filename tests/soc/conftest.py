import shutil

import pytest


def _simulator_buildable():
    return all(shutil.which(t) for t in ("verilator", "riscv64-unknown-elf-gcc", "meson", "ninja"))


@pytest.fixture(scope="session")
def sim_build():
    """The cached simulator build (built on first use, ~1 min)."""
    if not _simulator_buildable():
        pytest.fail("Verilator / RISC-V GCC / meson / ninja missing: run scripts/setup.sh")
    from soc import sim
    return sim.build()


@pytest.fixture(scope="module")
def device(sim_build):
    """One booted simulated SoC shared by a test module."""
    from driver.device import Device
    dev = Device.open("sim")
    yield dev
    dev.close()
