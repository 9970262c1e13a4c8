#!/usr/bin/env bash
# Bench 3's targets table (benchmarks/pocket_targets.py --bench 3) on a lent GPU machine: one process per
# (dataset, seed) and one per seed for the shifted variants, all at once (16 cores, one GPU), each writing its
# own JSON after every number; then one merged JSON and the table. Carry .gpu/wheels and .gpu/emoji
# (sprites64-v1.npy.xz, sprites64-v2.npy.xz, concepts-v1.json: the sprite banks the b3_ sets render from).
#   bash scripts/bench3_gpu_targets.sh [SECONDS per process, default 440] [extra pocket_targets.py flags]
# CPU rehearsal: DEVICE=cpu SEEDS=1 DATASETS="b3_hands b3_symbols" bash scripts/bench3_gpu_targets.sh 60 --epochs 2 ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
CAP=${1:-440}
shift || true
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-1 2 3}
PY=${PY:-python3}
mkdir -p "$OUT" runs/targets-b3
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
"$PY" -c "import open_clip" 2>/dev/null || "$PY" -m pip install -q --no-index --no-deps ${WHEELS:-.gpu/wheels}/*.whl 2>&1 | tail -2
mkdir -p .data/emoji
for f in sprites64-v1 sprites64-v2; do
  [ -f .data/emoji/$f.npy ] || "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    .gpu/emoji/$f.npy.xz .data/emoji/$f.npy
done
[ -f .data/emoji/concepts-v1.json ] || cp .gpu/emoji/concepts-v1.json .data/emoji/
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
DATASETS=${DATASETS:-$("$PY" -c "from ncprompt.pocket.suite3 import SUITE3; print(' '.join(SUITE3))")}
t0=$(date +%s)
for seed in $SEEDS; do
  for d in $DATASETS; do
    timeout "$CAP" "$PY" benchmarks/pocket_targets.py --bench 3 --seeds "$seed" --datasets "$d" --variants \
      --device "$DEVICE" --threads 1 --cache cache/targets-b3 --json "runs/targets-b3/s$seed-$d.json" "$@" \
      > "runs/targets-b3/s$seed-$d.log" 2>&1 &
  done
  # the shifted variants: zero-shot of b3_generic and its variants (no training)
  timeout "$CAP" "$PY" benchmarks/pocket_targets.py --bench 3 --seeds "$seed" --datasets b3_generic \
    --skip probe coop kgcoop tail --device "$DEVICE" --threads 1 --cache cache/targets-b3 \
    --json "runs/targets-b3/s$seed-variants.json" "$@" > "runs/targets-b3/s$seed-variants.log" 2>&1 &
done
wait
echo "all processes ended after $(( $(date +%s) - t0 )) s" | tee "$OUT/wall.txt"
grep -l "Traceback\|Error" runs/targets-b3/*.log | tee "$OUT/failed.txt"
"$PY" benchmarks/pocket_targets.py --merge runs/targets-b3/s*.json --json "$OUT/pocket_targets_b3.json" \
  | tee "$OUT/table.md"
tar czf "$OUT/targets-b3-runs.tgz" runs/targets-b3
