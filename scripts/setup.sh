#!/usr/bin/env bash
# One set-up path for a fresh machine: Debian's Fashion-MNIST and Symbola font, a virtual environment
# in .venv, torch/torchvision (pinned; pip takes them from this machine's disk), ncprompt and its
# extras, and the pocket world's emoji art (pinned npm packages unpacked into .data/emoji, rendered
# once into a sprite cache; docs/datasets.md lists them and their licences).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_pkgs=""
[ -d /usr/share/datasets/fashion-mnist ] || apt_pkgs="$apt_pkgs dataset-fashion-mnist"
[ -f /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf ] || apt_pkgs="$apt_pkgs fonts-symbola"
ldconfig -p | grep -q 'libcairo.so.2 ' || apt_pkgs="$apt_pkgs libcairo2"
command -v npm >/dev/null || apt_pkgs="$apt_pkgs npm"
if [ -n "$apt_pkgs" ]; then
  echo "[setup] installing Debian packages:$apt_pkgs"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $apt_pkgs >/dev/null
fi

# The emoji art: npm packages (pinned), only the files the pocket world reads.
EMOJI=.data/emoji
emoji_pkg() {  # name@version, folder, paths inside the package
  local spec=$1 dir=$2; shift 2
  [ -f "$EMOJI/$dir/package.json" ] && return 0
  echo "[setup] fetching npm $spec"
  mkdir -p .data/npm "$EMOJI/$dir"
  local tgz; tgz=$(cd .data/npm && npm pack --silent "$spec" | tail -1)
  tar xzf ".data/npm/$tgz" -C "$EMOJI/$dir" --strip-components=1 "$@" package/package.json
  rm -f ".data/npm/$tgz"
}
emoji_pkg emoji-datasource-google@16.0.0 google package/img/google/64 package/emoji.json package/LICENSE
emoji_pkg emoji-datasource-twitter@16.0.0 twitter package/img/twitter/64 package/emoji.json package/LICENSE
emoji_pkg openmoji@17.0.0 openmoji package/color/svg package/black/svg package/data/openmoji.json package/LICENSE.txt
emoji_pkg @lobehub/fluent-emoji-3d@1.1.0 fluent3d package/assets package/README.md
emoji_pkg emojibase-data@17.0.0 emojibase package/en/data.json package/en/messages.json package/LICENSE
# bench 3's further artists (docs/datasets.md): Iconify SVG sets, rendered into sprites64-v2 below (once)
for spec in "@iconify-json/emojione@1.2.3 emojione" "@iconify-json/emojione-v1@1.2.3 emojione-v1" \
    "@iconify-json/fluent-emoji-flat@1.2.6 fluent-flat" "@iconify-json/fluent-emoji-high-contrast@1.2.6 fluent-hc"; do
  # shellcheck disable=SC2086
  emoji_pkg $spec package/icons.json package/chars.json package/info.json
done

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.ncprompt-setup
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing torch==2.14.1 torchvision==0.29.1 and ncprompt (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q -e ".[dev]"
  .venv/bin/python -m pip install -q cairosvg==2.9.1  # renders the OpenMoji SVGs of the sprite cache
  echo "$want" > "$stamp"
fi
.venv/bin/python -m ncprompt.pocket.emoji  # the sprite cache (about a minute, once)
.venv/bin/python -m ncprompt.pocket.emoji_extra  # bench 3's further artists (about a minute, once)
