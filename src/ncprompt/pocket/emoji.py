"""Emoji artwork and names from the package registries: the raw material of the pocket world.

``scripts/setup.sh`` unpacks five npm packages into ``.data/emoji/`` (override with
``$NCPROMPT_EMOJI_DIR``) and installs Debian's ``fonts-symbola``; :func:`build_cache` then renders
every concept once by every artist into one sprite array (64x64 RGBA), so nothing is fetched or
decoded at run time:

==============  ========================================  ==========================  =============
artist          source                                    look                        licence
==============  ========================================  ==========================  =============
``google``      npm emoji-datasource-google 16 (Noto)     flat colour, 64 px PNG      Apache-2.0 art
``twitter``     npm emoji-datasource-twitter 16           flat colour (Twemoji)       CC-BY 4.0 art
``openmoji``    npm openmoji 17, ``color/svg``            flat colour, thick outline  CC BY-SA 4.0
``fluent``      npm @lobehub/fluent-emoji-3d 1.1          3D rendering (WebP)         MIT
``lineart``     npm openmoji 17, ``black/svg``            black line art              CC BY-SA 4.0
``symbola``     Debian fonts-symbola (Symbola_hint.ttf)   monochrome glyph            free (Debian)
==============  ========================================  ==========================  =============

Names, keywords (tags), groups and subgroups come from npm ``emojibase-data`` 17 (``en``, MIT);
synonyms from the emoji-datasource short names.  A *concept* is one emojibase entry with art by
google and twitter; skin-tone variants, components and regional indicators are left out.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ncprompt.data.base import DataError
from ncprompt.utils import atomic_write

REPO = Path(__file__).resolve().parents[3]
EMOJI_DIR = Path(os.environ.get("NCPROMPT_EMOJI_DIR", REPO / ".data" / "emoji"))
SYMBOLA_TTF = Path(os.environ.get("NCPROMPT_SYMBOLA_TTF", "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf"))
ARTISTS = ("google", "twitter", "openmoji", "fluent", "lineart", "symbola")
SPRITE = 64
CACHE_VERSION = 1
_FIX = "run `bash scripts/setup.sh` (it installs the emoji packages into .data/emoji and renders the sprites)"


def norm_hex(code: str) -> str:
    """Canonical code-point key: lower case, variation selector FE0F dropped (``2764-FE0F`` -> ``2764``)."""
    return "-".join(p for p in code.lower().split("-") if p != "fe0f")


@dataclass(frozen=True)
class Concept:
    """One emoji concept: its key, label (CLDR name), synonyms, tags and group / subgroup words."""

    key: str
    char: str
    label: str
    synonyms: tuple[str, ...]
    tags: tuple[str, ...]
    group: str
    subgroup: str


def _clean(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("_", " ").replace("-", " ")).strip().lower()


def _display_label(label: str) -> str:
    """emojibase label -> class name: ``flag: Egypt`` -> ``flag of Egypt``; ``keycap: 1`` -> ``keycap 1``."""
    if label.startswith("flag: "):
        return "flag of " + label[6:]
    return label.replace(": ", " ").replace(":", "")


def _read_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path} not found; {_FIX}")
    return json.loads(path.read_text(encoding="utf-8"))


def read_catalogue(root: Path = EMOJI_DIR) -> list[Concept]:
    """The concepts, in emojibase order (deterministic)."""
    data = _read_json(root / "emojibase" / "en" / "data.json")
    msgs = _read_json(root / "emojibase" / "en" / "messages.json")
    groups = {g["order"]: g["message"] for g in msgs["groups"]}
    subgroups = {g["order"]: g["message"] for g in msgs["subgroups"]}
    short = {}
    for e in _read_json(root / "google" / "emoji.json"):
        short[norm_hex(e["unified"])] = [_clean(s) for s in e.get("short_names") or []]
    out = []
    for e in data:
        g = e.get("group")
        if g is None or groups.get(g) == "components" or e["label"].startswith("regional indicator"):
            continue
        key = norm_hex(e["hexcode"])
        if key not in short:
            continue
        label = _display_label(e["label"])
        syn = tuple(dict.fromkeys(s for s in short[key] if s != label and not s.startswith("flag ")))
        tags = tuple(dict.fromkeys(t.lower() for t in e.get("tags") or [] if t.lower() != label))
        out.append(Concept(key, e["emoji"], label, syn, tags, groups[g], subgroups.get(e.get("subgroup"), "")))
    return out


# --------------------------------------------------------------------------------------------
# sprites


def _fit_rgba(img, size: int = SPRITE):
    """An RGBA PIL image cropped to its content and centred in a ``size`` square (aspect kept)."""
    from PIL import Image

    img = img.convert("RGBA")
    box = img.getchannel("A").getbbox()
    if box is None:
        return None
    img = img.crop(box)
    w, h = img.size
    s = (size - 2) / max(w, h)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(img, ((size - img.size[0]) // 2, (size - img.size[1]) // 2))
    return canvas


def _file_maps(root: Path) -> dict[str, dict[str, Path]]:
    maps: dict[str, dict[str, Path]] = {}
    for artist in ("google", "twitter"):
        d = root / artist / "img" / artist / "64"
        maps[artist] = {norm_hex(p.stem): p for p in d.glob("*.png")}
    maps["openmoji"] = {norm_hex(p.stem): p for p in (root / "openmoji" / "color" / "svg").glob("*.svg")}
    maps["lineart"] = {norm_hex(p.stem): p for p in (root / "openmoji" / "black" / "svg").glob("*.svg")}
    maps["fluent"] = {norm_hex(p.stem): p for p in (root / "fluent3d" / "assets").glob("*.webp")}
    for artist in ("google", "twitter", "openmoji", "lineart", "fluent"):
        if not maps[artist]:
            raise DataError(f"no {artist} artwork under {root}; {_FIX}")
    return maps


def _load_art(path: Path):
    from PIL import Image

    if path.suffix == ".svg":
        import cairosvg

        png = cairosvg.svg2png(url=str(path), output_width=4 * SPRITE, output_height=4 * SPRITE)
        return Image.open(io.BytesIO(png))
    return Image.open(path)


class _SymbolaRenderer:
    """Monochrome Symbola glyphs of single-code-point emoji (None where the font has no glyph)."""

    def __init__(self, ttf: Path) -> None:
        from PIL import ImageFont

        if not ttf.is_file():
            raise DataError(f"{ttf} not found; install Debian's fonts-symbola ({_FIX})")
        self.font = ImageFont.truetype(str(ttf), 160)
        self.missing = self._mask("\U0010fffd")

    def _mask(self, ch: str) -> bytes:
        from PIL import Image, ImageDraw

        img = Image.new("L", (256, 256), 0)
        ImageDraw.Draw(img).text((24, 24), ch, font=self.font, fill=255)
        return img.tobytes()

    def __call__(self, concept: Concept):
        from PIL import Image

        cps = [c for c in concept.char if ord(c) not in (0xFE0F, 0xFE0E)]
        if len(cps) != 1:
            return None
        m = self._mask(cps[0])
        if m == self.missing:
            return None
        alpha = Image.frombytes("L", (256, 256), m)
        img = Image.new("RGBA", (256, 256), (20, 20, 20, 0))
        img.putalpha(alpha)
        return _fit_rgba(img)


def cache_path(root: Path = EMOJI_DIR) -> Path:
    return root / f"sprites{SPRITE}-v{CACHE_VERSION}.npy"


def build_cache(root: Path = EMOJI_DIR, verbose: bool = True) -> Path:
    """Render every concept by every artist into ``sprites64-v1.npy`` (``(C, A, 64, 64, 4)`` uint8,
    alpha 0 where an artist has no artwork) plus ``concepts-v1.json``; atomic writes."""
    concepts = read_catalogue(root)
    maps = _file_maps(root)
    sym = _SymbolaRenderer(SYMBOLA_TTF)
    arr = np.zeros((len(concepts), len(ARTISTS), SPRITE, SPRITE, 4), dtype=np.uint8)
    for i, c in enumerate(concepts):
        for a, artist in enumerate(ARTISTS):
            if artist == "symbola":
                img = sym(c)
            else:
                p = maps[artist].get(c.key)
                img = _fit_rgba(_load_art(p)) if p is not None else None
            if img is not None:
                arr[i, a] = np.asarray(img, dtype=np.uint8)
        if verbose and (i + 1) % 200 == 0:
            print(f"[emoji] rendered {i + 1}/{len(concepts)} concepts", flush=True)
    out = cache_path(root)
    def write_npy(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.save adds no .npy suffix
            np.save(f, arr)

    atomic_write(out, write_npy)
    meta = [c.__dict__ for c in concepts]
    text = json.dumps({"version": CACHE_VERSION, "artists": ARTISTS, "concepts": meta})
    atomic_write(root / f"concepts-v{CACHE_VERSION}.json", lambda tmp: tmp.write_text(text))
    return out


@lru_cache(maxsize=1)
def load() -> tuple[list[Concept], np.ndarray]:
    """``(concepts, sprites)``; sprites ``(C, A, 64, 64, 4)`` uint8, memory-mapped."""
    path = cache_path()
    meta = EMOJI_DIR / f"concepts-v{CACHE_VERSION}.json"
    if not path.is_file() or not meta.is_file():
        raise DataError(f"emoji sprite cache {path} not found; {_FIX}")
    m = json.loads(meta.read_text())
    concepts = [Concept(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()}) for c in m["concepts"]]
    return concepts, np.load(path, mmap_mode="r")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Render the emoji sprite cache from the unpacked packages.")
    ap.add_argument("--root", type=Path, default=EMOJI_DIR)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    if cache_path(a.root).is_file() and not a.force:
        print(f"[emoji] {cache_path(a.root)} exists")
        return
    print(f"[emoji] wrote {build_cache(a.root)}")


if __name__ == "__main__":
    main()
