#!/usr/bin/env bash
# The demo on the embedded default: start the simulated SoC (building it on first use), upload
# the bundled model (models/tinytales) into its DRAM, CRC-verified, and generate text greedily on
# the transformer core; text on stdout, stats on stderr. Extra arguments go to `generate`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
exec "${LITETRANSFORMER_VENV:-$ROOT/.venv}/bin/litetransformer" generate -i "Once upon a time" -n 100 -t 0 --target sim "$@"
