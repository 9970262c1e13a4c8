#!/usr/bin/env bash
# The other methods of docs/results.md on the pocket emoji suite, next to pocket_results.sh's grids: CoCoOp, MaPLe,
# IVLP, PromptSRC, ProGrad, TCP, each with and without NPT (base-to-new, 16 shots), and the linear probe with a
# zero-shot reference (protocol all: a probe cannot score new classes), at tau = 1 and 0.25, seeds 1-3.
# Each method trains with its own recipe (configs/pocket_<method>_b2n.yaml = the pocket_<method>_b2n preset), so
# each is its own grid: OUT/tau<tau>-methods/<method>/<dataset>/<method>[+npt]/seed<s>/ (new folders only: a grid
# reuses a finished cell only with the same settings, weights and data, so it resumes where it stopped).
# Then `python scripts/results_doc.py OUT` merges them into docs/results.md. On 16 cores: WORKERS=14.
# shellcheck source=scripts/pocket_env.sh
source "$(dirname "$0")/pocket_env.sh"
TAUS=${TAUS:-"1.0 0.25"}
METHODS=${METHODS:-"cocoop maple ivlp promptsrc prograd tcp linear_probe"}
for tau in $TAUS; do
  for m in $METHODS; do
    if [ "$m" = linear_probe ]; then
      config=configs/pocket_linear_probe.yaml specs="zeroshot linear_probe"
    else
      config="configs/pocket_${m}_b2n.yaml" specs="$m $m+npt"
    fi
    # shellcheck disable=SC2086
    $NC --no-progress protocol --config "$config" --datasets $DATASETS --methods $specs --seeds $SEEDS --shots 16 \
        --imbalance "$tau" --workers "${WORKERS:-1}" --output "$OUT/tau$tau-methods/$m"
  done
done
# the NC / accuracy report over every trained run of both scripts (pocket_results.sh's report covers its own runs)
$NC --no-progress report "$OUT"/tau*/*/coop* "$OUT"/tau*/*/kgcoop* "$OUT"/tau*-methods/{cocoop,maple,ivlp,promptsrc,prograd,tcp} \
    --output "$OUT/report"
