# Sourced by pocket_results.sh and pocket_methods.sh: strict mode, the repository root, and the defaults both
# share (the ncprompt command, the output folder, the bench's datasets and seeds; each can be set outside).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NC=${NC:-.venv/bin/ncprompt}
OUT=${OUT:-runs/results}
# the datasets docs/results.md was made from: the DTD and EuroSAT roles' first (artist-mix) sets; the suite's
# current ones are emoji_symbols_openmoji and emoji_hands_openmoji (docs/datasets.md)
DATASETS=${DATASETS:-"emoji_animals emoji_symbols emoji_hands"}
SEEDS=${SEEDS:-"1 2 3"}
