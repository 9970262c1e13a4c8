#!/usr/bin/env bash
# Bench 3's pretraining on a lent GPU machine (CUDA image with torch, no internet, the working tree only).
# Carry: .gpu/wheels (open_clip and the other wheels of benchmarks/gpu_session.sh) and the pack
# runs/bench3/pretrain-pack.npz (`python -m ncprompt.pocket.bench3 pack`, 6.4 MiB: the pretraining artworks
# only, no test or training artwork). Writes the run folder's weights, config and log to $OUT.
#   bash scripts/bench3_gpu_pretrain.sh [extra pretrain flags, e.g. --steps 20 for a smoke test]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
RUN=${RUN:-runs/pocket-pretrain-b3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
python3 -c "import open_clip" 2>/dev/null || python3 -m pip install -q --no-index --no-deps .gpu/wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m ncprompt.pocket.pretrain --bench 3 --sprites runs/bench3/pretrain-pack.npz --device cuda --threads 8 \
  --output "$RUN" --minutes 8 --log-every 100 "$@" 2>&1 | tee "$OUT/pretrain.log"
rc=${PIPESTATUS[0]}
# files come back at most 16 MiB each: the fp16 weights (about 19 MiB) in two parts,
# joined here with `cat pocket.safetensors.part-* > pocket.safetensors` and checked against sha256.txt
cp "$RUN"/open_clip_config.json "$OUT"/ 2>/dev/null
[ -f "$RUN"/pocket.safetensors ] && split -b 12M -d "$RUN"/pocket.safetensors "$OUT"/pocket.safetensors.part-
sha256sum "$RUN"/pocket.safetensors runs/bench3/pretrain-pack.npz 2>/dev/null | tee "$OUT/sha256.txt"
exit "$rc"
