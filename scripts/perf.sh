#!/usr/bin/env bash
# Regenerates docs/performance.md's tables, docs/performance.png and the raw docs/performance*.json
# on the simulated SoC (~40 min here: the uploads of stories15M, 42M and 110M, 17, 48 and 124 MB over the simulated serial link, take ~17 of them). The prose of
# the page is kept; each command rewrites only its own <!-- bench:SECTION --> block.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --bench          # llama.cpp's binding too, for the yardstick below
cd "$ROOT"
LT=("${LITETRANSFORMER_VENV:-$ROOT/.venv}/bin/python" -m driver.cli bench --target sim --batch 1,2,4,8 --json)
# Prefill and decode near position 0 for the three shapes, the roofline plot, the CPU baseline.
"${LT[@]}" --shape aidreams260K,stories260K,stories15M \
    --plot docs/performance.png --markdown docs/performance.md --section results > docs/performance.json
# stories42M and stories110M (their w2 runs as column tiles): batch 1 and 8 only, since their
# uploads take ~4.5 and ~13 min over the simulated serial link (the later --batch wins).
"${LT[@]}" --shape stories42M,stories110M --batch 1,8 --no-cpu \
    --markdown docs/performance.md --section tiled > docs/performance-tiled.json
# Decode at the end of a 256-position context, where every slot reads 256 K/V rows per layer.
"${LT[@]}" --shape aidreams260K,stories260K --start-pos 248 --positions 8 --no-cpu \
    --markdown docs/performance.md --section late > docs/performance-late.json
# The CPU yardsticks on this machine (the C kernel; llama.cpp in F32 and Q8_0, one thread and
# all, one sequence and eight) beside the boards' projections from the first run, per GB/s too.
"${LITETRANSFORMER_VENV:-$ROOT/.venv}/bin/python" -m driver.cli yardstick --json \
    --shape stories260K,stories15M,stories42M,stories110M --projections docs/performance.json \
    --markdown docs/performance.md --section yardstick > docs/performance-yardstick.json
