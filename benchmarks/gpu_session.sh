#!/usr/bin/env bash
# A lent GPU machine (the device tool: CUDA image with torch, no internet, the working tree only) in two calls,
# back to back while the machine is warm. What it needs beyond the tree travels in the ignored folder .gpu/:
#   .gpu/wheels/  open_clip_torch, ftfy, wcwidth, pydantic (+ core, annotated_types, typing_inspection), mlxtend,
#                 submitit as cp312 wheels (pip download --only-binary=:all: --python-version 3.12 ...)
#   .gpu/data/    Debian's Fashion-MNIST files (/usr/share/datasets/fashion-mnist)
#   .gpu/emoji/   the pocket world's sprite cache (sprites64-v1.npy.xz, 27 MB) and concepts-v1.json: all the suite
#                 reads once rendered; second call only (64 MiB per call)
#
#   bash benchmarks/gpu_session.sh bench   # call 1 (carry .gpu/wheels .gpu/data): install, GPU prompt-step bench
#   bash benchmarks/gpu_session.sh suite   # call 2 (carry .gpu/emoji): the whole test suite on the GPU
# Results land in $OUT (benchmarks JSON, the suite's log and junit XML).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
case "${1:-}" in
  bench)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    python3 -m pip install -q --no-index --no-deps .gpu/wheels/*.whl 2>&1 | tail -2
    mkdir -p /usr/share/datasets/fashion-mnist && cp .gpu/data/* /usr/share/datasets/fashion-mnist/
    python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" \
      | tee -a "$OUT/gpu.txt"
    for prec in bf16 fp32; do
      timeout 150 python3 benchmarks/bench_shared_prefix.py --device cuda --precision "$prec" --k1000 --reps 5 \
        --no-doc --note "lent H200, nothing else running" --out "$OUT/shared_prefix_cuda_$prec.json" 2>&1 | tail -30
    done
    ;;
  suite)
    mkdir -p .data/emoji && python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/emoji/sprites64-v1.npy.xz'), open('.data/emoji/sprites64-v1.npy', 'wb'))"
    cp .gpu/emoji/concepts-v1.json .data/emoji/
    python3 -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name())"
    timeout 480 python3 -m pytest tests -q -p no:cacheprovider --durations=10 --junitxml="$OUT/gpu_pytest.xml" \
      2>&1 | tee "$OUT/gpu_pytest.log" | tail -40
    ;;
  *) echo "usage: $0 bench|suite" >&2; exit 2 ;;
esac
