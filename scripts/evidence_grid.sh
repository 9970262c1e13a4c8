#!/usr/bin/env bash
# One part of the evidence grid (issue 22, docs/evidence.md): `scripts/evidence_grid.sh list` names the parts,
# `scripts/evidence_grid.sh PART` runs one (2 processes x 1 thread, longest cells first, finished cells reused) and
# writes benchmarks/results/evidence/PART.json; then `ncprompt evidence benchmarks/results/evidence --output
# docs/evidence` makes the report from every part that has run. Extra options go to scripts/evidence_grid.py
# (e.g. --datasets for bench 3's suite, --seeds 6 7 where a verdict is close).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
if [ "${1:-list}" = list ]; then
  exec "$PY" scripts/evidence_grid.py list "${@:2}"
fi
exec "$PY" scripts/evidence_grid.py run "$@"
