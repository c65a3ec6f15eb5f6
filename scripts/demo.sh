#!/usr/bin/env bash
# The demo on the embedded default: start the simulated SoC (building it on first use), upload
# 1 MiB through the host link into its DRAM and verify it with the device's CRC.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
exec "${LITETRANSFORMER_VENV:-$ROOT/.venv}/bin/litetransformer" selftest --target sim --bytes 1048576 "$@"
