#!/usr/bin/env bash
# The test suite: unit tests, Migen simulations and the Verilator SoC tests (the simulator is
# built once and cached by a hash of its inputs). Extra arguments go to pytest, e.g. -m "not sim".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "${LITETRANSFORMER_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
