#!/usr/bin/env bash
# Reproduces the numbers of docs/results.md (with the current suite's DATASETS: docs/results-openmoji.md) on
# the pocket emoji suite: zero-shot, CoOp, CoOp+NPT, KgCoOp, KgCoOp+NPT, base-to-new, 16 shots, tau = 1, 0.25
# and 0.06, seeds 1-3; NPT variants and lambdas under imbalance; then the cross-run correlation report.
# Finished runs are skipped, so it resumes.
# WORKERS=N runs N cells at a time (one thread each is best on shared cores, docs/benchmarks.md).
# shellcheck source=scripts/pocket_env.sh
source "$(dirname "$0")/pocket_env.sh"
for tau in 1.0 0.25 0.06; do
  # shellcheck disable=SC2086
  $NC --no-progress protocol --config configs/pocket_b2n.yaml --datasets $DATASETS \
      --methods zeroshot coop coop+npt kgcoop kgcoop+npt --seeds $SEEDS --shots 16 --imbalance $tau \
      --workers "${WORKERS:-1}" --output "$OUT/tau$tau"
done
VARIANT_DATASETS=${VARIANT_DATASETS:-$DATASETS}
VARIANTS=${VARIANTS-"anchored_procrustes anchored_identity cross_similarity lambda_0.5 lambda_1.0"}
for v in $VARIANTS; do
  # shellcheck disable=SC2086
  $NC --no-progress protocol --config "configs/npt_$v.yaml" --datasets $VARIANT_DATASETS \
      --methods coop+npt --seeds $SEEDS --shots 16 --imbalance 0.25 --workers "${WORKERS:-1}" --output "$OUT/variants/$v"
done
$NC --no-progress report "$OUT"/tau*/*/coop* "$OUT"/tau*/*/kgcoop* "$OUT"/variants --output "$OUT/report"
