"""LiteX's own host tools against the simulated SoC, as a LiteX user would point them at a
board: litex_server on the UART link (the simulator's TCP port through pyserial's socket://),
litex_cli reading the identifier and the registers and writing one, and litex_term's crossover
console reaching the BIOS."""

import os
import pty
import re
import select
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.sim

BIN = os.path.dirname(sys.executable)
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")          # the BIOS colours its prompt


@pytest.fixture(scope="module")
def server(sim_build):
    from soc.sim import SimProcess
    sim = SimProcess(sim_build)
    port = 1234          # litex_term's crossover mode reaches litex_server only there
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip("TCP port 1234 is taken (a litex_server already running?): litex_term's crossover needs it")
    srv = subprocess.Popen([os.path.join(BIN, "litex_server"), "--uart", "--uart-port",
                            f"socket://127.0.0.1:{sim.port}", "--bind-port", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("litex_server did not start listening")
        yield {"port": port, "csr": sim_build.csr_csv}
    finally:
        srv.terminate()
        srv.wait(10)
        sim.stop()


def _cli(server, *args):
    r = subprocess.run([os.path.join(BIN, "litex_cli"), "--port", str(server["port"]), "--csr-csv", server["csr"],
                        *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    return r.stdout


def test_litex_cli_reads_ident_and_registers_and_writes_one(server):
    assert "LiteTransformer simulation" in _cli(server, "--ident")
    regs = _cli(server, "--regs", "--filter", "ctrl_scratch")
    assert "ctrl_scratch" in regs and "0x12345678" in regs
    _cli(server, "--write", "ctrl_scratch", "0xcafe0123")
    assert "0xcafe0123" in _cli(server, "--read", "ctrl_scratch")
    _cli(server, "--write", "ctrl_scratch", "0x12345678")


def test_litex_term_crossover_reaches_the_bios(server):
    # litex_term wants a terminal: run it on a pseudo-terminal, ask for a prompt.
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(os.path.join(BIN, "litex_term"), ["litex_term", "crossover", "--csr-csv", server["csr"]])
    seen = b""
    try:
        deadline = time.monotonic() + 60
        last_poke = 0.0
        while time.monotonic() < deadline and b"litex>" not in _ANSI.sub(b"", seen):
            if time.monotonic() - last_poke > 2:
                os.write(fd, b"\r")
                last_poke = time.monotonic()
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    assert b"litex>" in _ANSI.sub(b"", seen), seen[-500:]
