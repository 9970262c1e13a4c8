#!/usr/bin/env bash
# Regenerate the example figures of docs/figures/ (docs/usage.md shows them) from small real runs of the
# pocket model: a few-shot grid (accuracy against shots: the grid's summary.png and tables/few_shot.png), one run's analysis (training curves with
# the NPT terms, the text cosine heatmaps, the geometry) and the NC report. About 1 minute on 2 idle cores.
#   bash scripts/docs_figures.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
NC=${NC:-.venv/bin/ncprompt}
WORK=${1:-/tmp/ncprompt-docs-figures}
FIG=docs/figures
mkdir -p "$FIG"
"$NC" protocol --datasets emoji_hands_openmoji emoji_animals --methods zeroshot coop coop+npt --seeds 1 2 \
  --shots 1 2 4 --protocol all --epochs 10 --max-test-per-class 10 --no-flip --crop-min 0.5 \
  --output "$WORK/fewshot" --workers 2
"$NC" analyze "$WORK/fewshot/emoji_animals/shots4/coop+npt/seed1" >/dev/null
"$NC" analyze "$WORK/fewshot/emoji_animals/shots4/zeroshot/seed1" >/dev/null
"$NC" report "$WORK/fewshot" --output "$WORK/report" --pool >/dev/null
cp "$WORK/fewshot/tables/few_shot.png" "$FIG/few_shot.png"
cp "$WORK/fewshot/emoji_animals/shots4/coop+npt/seed1/plots/training.png" "$FIG/training.png"
cp "$WORK/fewshot/emoji_animals/shots4/coop+npt/seed1/plots/geometry.png" "$FIG/geometry.png"
cp "$WORK/fewshot/emoji_animals/shots4/zeroshot/seed1/plots/text_cosine_before_after.png" \
  "$FIG/text_cosine_zero_shot.png"
first=$(ls "$WORK/report"/correlations_*.png | head -1)
cp "$first" "$FIG/correlations.png"
ls -la "$FIG"
