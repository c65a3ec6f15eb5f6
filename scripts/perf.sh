#!/usr/bin/env bash
# Regenerates docs/performance.md's tables, docs/performance.png and the raw docs/performance*.json
# on the simulated SoC (~15 min here; stories15M's 37 MB upload is a few of them). The prose of
# the page is kept; each command rewrites only its own <!-- bench:SECTION --> block.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
LT=("${LITETRANSFORMER_VENV:-$ROOT/.venv}/bin/python" -m driver.cli bench --target sim --batch 1,2,4,8 --json)
# Prefill and decode near position 0 for the three shapes, the roofline plot, the CPU baseline.
"${LT[@]}" --shape aidreams260K,stories260K,stories15M \
    --plot docs/performance.png --markdown docs/performance.md --section results > docs/performance.json
# Decode at the end of a 256-position context, where every slot reads 256 K/V rows per layer.
"${LT[@]}" --shape aidreams260K,stories260K --start-pos 248 --positions 8 --no-cpu \
    --markdown docs/performance.md --section late > docs/performance-late.json
