#!/usr/bin/env bash
# Bench 3's targets table (benchmarks/pocket_targets.py --bench 3): one process per (dataset, seed) and one per
# seed for the shifted variants, JOBS at a time (largest datasets first), each with one thread and its own JSON
# written after every number (a killed process keeps what it measured; a rerun redoes only what is missing
# from runs/targets-b3); then one merged JSON and the table.
#   bash scripts/bench3_targets.sh [SECONDS per process, default 7200] [extra pocket_targets.py flags]
# Environment: JOBS (default 2: the 2-core machine), SEEDS (default "1 2 3"), DATASETS (default the b3_ suite),
# DEVICE (default cpu), OUT (where the merged JSON and table go, default runs/targets-b3), PY, TAG (a suffix of
# each process's files, so a later pass adds rows beside an earlier one's: e.g. TAG=-tail with `--skip probe coop
# kgcoop` adds the tail rows to seeds that ran with `--skip tail`; the merge takes every file), VARIANTS=0 (no
# shifted-variants process).
# On a lent GPU machine (16 cores): DEVICE=cuda JOBS=36 WHEELS=.gpu/wheels-min, carrying .gpu/wheels-min and
# .gpu/emoji (sprites64-v1.npy.xz, sprites64-v2.npy.xz, concepts-v1.json: the banks the b3_ sets render from).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/targets-b3}
CAP=${1:-7200}
shift || true
DEVICE=${DEVICE:-cpu}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-1 2 3}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT" runs/targets-b3
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import open_clip" 2>/dev/null || "$PY" -m pip install -q --no-index --no-deps ${WHEELS:-.gpu/wheels}/*.whl 2>&1 | tail -2
  mkdir -p .data/emoji
  for f in sprites64-v1 sprites64-v2; do
    [ -f .data/emoji/$f.npy ] || "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      .gpu/emoji/$f.npy.xz .data/emoji/$f.npy
  done
  [ -f .data/emoji/concepts-v1.json ] || cp .gpu/emoji/concepts-v1.json .data/emoji/
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
fi
# largest first (classes) within a seed, so the long ones do not start last
DATASETS=${DATASETS:-$("$PY" -c "from ncprompt.pocket.suite3 import SETS3, SUITE3
print(' '.join(sorted(SUITE3, key=lambda n: -len(SETS3[n].select()))))")}
t0=$(date +%s)
export CAP PY DEVICE T0=$t0 EXTRA="$*" TAG=${TAG:-}  # extra flags: words without spaces
for seed in $SEEDS; do  # seed by seed, so the first seed's table is complete first
  for d in $DATASETS $([ "${VARIANTS:-1}" = 0 ] || echo variants); do echo "$seed $d"; done
done | xargs -P "$JOBS" -L 1 bash -c '
  seed=$1; d=$2
  stem=runs/targets-b3/s$seed-$d$TAG
  done=$stem.done
  [ -f "$done" ] && { echo "[bench3-targets] seed $seed $d: done before"; exit 0; }
  if [ "$d" = variants ]; then  # zero-shot of b3_generic and its shifted variants (no training)
    args=(--datasets b3_generic --skip probe coop kgcoop tail)
  else
    args=(--datasets "$d" --variants)
  fi
  # the extra flags first, so that a job'"'"'s own (the variants'"'"' --skip) win
  timeout "$CAP" "$PY" benchmarks/pocket_targets.py $EXTRA --bench 3 --seeds "$seed" "${args[@]}" \
    --device "$DEVICE" --threads 1 --cache cache/targets-b3 --json "$stem.json" \
    > "$stem.log" 2>&1
  rc=$?
  [ $rc = 0 ] && touch "$done"
  echo "[bench3-targets] seed $seed $d: exit $rc after $(( $(date +%s) - T0 )) s"
' _
echo "all processes ended after $(( $(date +%s) - t0 )) s on $JOBS jobs ($DEVICE)" | tee "$OUT/wall.txt"
grep -l "Traceback" runs/targets-b3/*.log | tee "$OUT/failed.txt"
"$PY" benchmarks/pocket_targets.py --merge runs/targets-b3/s*.json --json "$OUT/pocket_targets_b3.json" \
  | tee "$OUT/table.md"
[ "$DEVICE" = cuda ] && tar czf "$OUT/targets-b3-runs.tgz" runs/targets-b3
exit 0
