"""Etherbone through LiteEth on the simulated SoC: the simulator's Ethernet model on a TAP
interface inside a network namespace this module creates for itself, so the host's own IP
stack carries the packets (ARP, IPv4, UDP). The driver's etherbone:// target generates the
same greedy tokens as the UART path of the same simulator and as the golden model; an upload
verifies with the device's CRC; a wrong address and a taken port are named; litex_server --udp
and litex_cli reach the SoC too."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.sim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _why_not():
    if os.geteuid() != 0:
        return "needs root: the test makes a network namespace and the simulator opens a TAP interface in it"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` for the network namespace"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for the simulator's TAP interface"
    return None


@pytest.fixture(scope="module")
def ebsim():
    why = _why_not()
    if why:
        pytest.skip(why)
    from soc import sim
    build = sim.build(sim.ETHERBONE_PARAMS)
    ns = f"lt-eb-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        proc = sim.SimProcess(build, netns=ns)
        yield {"ns": ns, "build": build, "proc": proc, "eb": f"etherbone://{sim.ETH_DEVICE_IP}",
               "uart": proc.url}
    finally:
        if proc:
            proc.stop()
        subprocess.run(["ip", "netns", "del", ns])


def _cli(env, *args, timeout=600):
    """`litetransformer ARGS` inside the namespace."""
    return subprocess.run(["ip", "netns", "exec", env["ns"], sys.executable, "-m", "driver.cli", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _tokens(result):
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return [s["tokens"] for s in out["sequences"]]


def test_etherbone_generates_the_tokens_of_the_uart_path_and_golden(ebsim):
    gen = ["generate", "-i", "Once upon a time", "-i", "The little dog", "-n", "24", "-t", "0", "--json", "--quiet"]
    over_eb = _tokens(_cli(ebsim, *gen, "--target", ebsim["eb"], "--csr", ebsim["build"].csr_csv))
    over_uart = _tokens(_cli(ebsim, *gen, "--target", ebsim["uart"], "--csr", ebsim["build"].csr_csv))
    golden = _tokens(_cli(ebsim, *gen, "--target", "golden"))
    assert over_eb == over_uart == golden
    assert all(len(t) >= 12 for t in over_eb), over_eb        # (prompt and generated tokens)


def test_etherbone_upload_verifies_with_the_device_crc(ebsim):
    r = _cli(ebsim, "selftest", "--target", ebsim["eb"], "--csr", ebsim["build"].csr_csv, "--bytes", str(96 * 1024),
             "--json", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["readback_ok"] and out["host_crc"] == out["device_crc"]
    assert out["bytes_per_cycle"] > 0.2, out


def test_a_wrong_address_and_a_taken_port_are_named(ebsim):
    r = _cli(ebsim, "info", "--target", "etherbone://192.168.1.77", "--csr", ebsim["build"].csr_csv,
             "--timeout", "2", timeout=120)
    assert r.returncode != 0
    assert "etherbone://192.168.1.77" in r.stderr and "not answering" in r.stderr, r.stderr[-1000:]
    # Another client on the host holds UDP port 1234 (litex_server --udp would): named, no hang.
    code = ("import socket, subprocess, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 1234))\n"
            "r = subprocess.run([sys.executable, '-m', 'driver.cli', 'info', '--target', sys.argv[1], '--csr', "
            "sys.argv[2], '--timeout', '2'], capture_output=True, text=True)\n"
            "print(r.returncode); print(r.stderr)\n")
    r = subprocess.run(["ip", "netns", "exec", ebsim["ns"], sys.executable, "-c", code, ebsim["eb"],
                        ebsim["build"].csr_csv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    rc, err = r.stdout.split("\n", 1)
    assert rc.strip() != "0" and "UDP port 1234" in err and "another Etherbone client" in err, r.stdout
    # and the simulator still answers the next client
    r = _cli(ebsim, "info", "--target", ebsim["eb"], "--csr", ebsim["build"].csr_csv, "--json")
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["ident"] == "LiteTransformer simulation"


def test_litex_server_udp_and_litex_cli_reach_the_soc(ebsim):
    # LiteX's own tools on the Etherbone link, as on a board with Ethernet.
    bin_dir = os.path.dirname(sys.executable)
    code = ("import socket, subprocess, sys, time\n"
            "srv = subprocess.Popen([sys.argv[1] + '/litex_server', '--udp', '--udp-ip', sys.argv[2]],\n"
            "                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "try:\n"
            "    for _ in range(100):\n"
            "        try:\n"
            "            socket.create_connection(('127.0.0.1', 1234), timeout=1).close(); break\n"
            "        except OSError:\n"
            "            time.sleep(0.2)\n"
            "    r = subprocess.run([sys.argv[1] + '/litex_cli', '--ident', '--csr-csv', sys.argv[3]],\n"
            "                       capture_output=True, text=True, timeout=60)\n"
            "    print(r.stdout + r.stderr)\n"
            "finally:\n"
            "    srv.terminate(); srv.wait(10)\n")
    from soc import sim
    r = subprocess.run(["ip", "netns", "exec", ebsim["ns"], sys.executable, "-c", code, bin_dir, sim.ETH_DEVICE_IP,
                        ebsim["build"].csr_csv], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert "LiteTransformer simulation" in r.stdout, r.stdout[-1000:] + r.stderr[-1000:]
