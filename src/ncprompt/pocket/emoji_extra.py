"""More artworks per concept for bench 3: four Iconify emoji sets rendered into a second sprite bank.

``scripts/setup.sh`` unpacks these npm packages (pinned, only ``icons.json``, ``chars.json``,
``info.json`` and ``package.json``) into ``.data/emoji/<folder>``; licences are read from each
package's own ``info.json`` / ``package.json`` and listed in ``docs/datasets.md``:

===============  ==========================================  =====================  ===========
artist           npm package                                 look                   licence
===============  ==========================================  =====================  ===========
``emojione``     @iconify-json/emojione 1.2.3 (EmojiOne 2)   flat colour, gradient  CC-BY-4.0
``emojione_v1``  @iconify-json/emojione-v1 1.2.3             flat colour (2015)     CC-BY-SA-4.0
``fluent_flat``  @iconify-json/fluent-emoji-flat 1.2.6       flat colour (Fluent)   MIT
``fluent_hc``    @iconify-json/fluent-emoji-high-contrast    black glyph            MIT
===============  ==========================================  =====================  ===========

``@svgmoji/blob`` (Blobmoji) was checked and left out: its npm package holds no artwork (it
fetches sprites from a CDN).  Each Iconify icon is an SVG body; it is mapped to an emojibase
concept by code point (``chars.json``, the Fluent sets) or else by name: the icon's name equals the
kebab-cased emojibase label (``flag-for-...`` for flags), Iconify's name of the code point in the
Fluent sets, or one of the emoji-datasource short names (EmojiOne's ``chars.json`` is empty).  Skin-tone
and gender variants are not used (one artwork per concept and artist).

:func:`build_bank` renders them like the v1 bank (cairosvg at 256 px, cropped to content, fitted in
64x64 RGBA) into ``sprites64-v2.npy`` ``(C, 4, 64, 64, 4)``, in the concept order of
``concepts-v1.json``; only bench 3 asks for it (``python -m ncprompt.pocket.emoji_extra``), the v1
bank and everything built on it are unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ncprompt.data.base import DataError
from ncprompt.pocket import emoji as E
from ncprompt.utils import atomic_write

EXTRA_ARTISTS = ("emojione", "emojione_v1", "fluent_flat", "fluent_hc")
FOLDERS = {"emojione": "emojione", "emojione_v1": "emojione-v1", "fluent_flat": "fluent-flat", "fluent_hc": "fluent-hc"}
PACKAGES = {
    "emojione": "@iconify-json/emojione@1.2.3",
    "emojione_v1": "@iconify-json/emojione-v1@1.2.3",
    "fluent_flat": "@iconify-json/fluent-emoji-flat@1.2.6",
    "fluent_hc": "@iconify-json/fluent-emoji-high-contrast@1.2.6",
}
LICENCES = {"emojione": "CC-BY-4.0", "emojione_v1": "CC-BY-SA-4.0", "fluent_flat": "MIT", "fluent_hc": "MIT"}
"""SPDX licence of each package's art, as its ``info.json`` states (checked by the tests)."""
BANK_VERSION = 2
_FIX = ("run `bash scripts/setup.sh` (it fetches the bench-3 Iconify packages and renders their bank: "
        "`python -m ncprompt.pocket.emoji_extra`)")


def slug(text: str) -> str:
    """``"flag: Côte d'Ivoire"`` -> ``flag-c-te-d-ivoire`` (Iconify's kebab-case names)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def package_licence(root: Path, artist: str) -> str:
    """The SPDX licence the package's own ``info.json`` states."""
    info = E._read_json(root / FOLDERS[artist] / "info.json")
    return str(info["license"]["spdx"])


def _name_index(root: Path, concepts: list[E.Concept]) -> dict[str, str]:
    """Icon name -> concept key: the emojibase labels, then Iconify's names of code points, then the
    emoji-datasource short names (the first source that names an icon wins)."""
    data = E._read_json(root / "emojibase" / "en" / "data.json")
    keys = {c.key for c in concepts}
    index: dict[str, str] = {}
    for e in data:
        k = E.norm_hex(e["hexcode"])
        if k in keys:
            index.setdefault(slug(e["label"]), k)
            if e["label"].startswith("flag: "):  # EmojiOne's flag names: flag-for-japan
                index.setdefault("flag-for-" + slug(e["label"][6:]), k)
    for folder in ("fluent-flat", "fluent-hc"):  # Iconify's own names of the code points
        chars = root / folder / "chars.json"
        for cp, name in (E._read_json(chars).items() if chars.is_file() else ()):
            if (k := E.norm_hex(cp)) in keys:
                index.setdefault(name, k)
    for e in E._read_json(root / "google" / "emoji.json"):  # last: short names may be another set's label
        k = E.norm_hex(e["unified"])
        if k in keys:
            for s in e.get("short_names") or []:
                index.setdefault(slug(s), k)
    return index


def icon_svgs(root: Path, artist: str, concepts: list[E.Concept]) -> dict[str, str]:
    """Concept key -> SVG text of the artist's icon (code point first, then name)."""
    pack = E._read_json(root / FOLDERS[artist] / "icons.json")
    chars = E._read_json(root / FOLDERS[artist] / "chars.json")
    icons, aliases = pack["icons"], pack.get("aliases", {})
    w0, h0 = pack.get("width", 16), pack.get("height", 16)

    def svg(name: str) -> str | None:
        seen = 0
        while name in aliases and name not in icons and seen < 8:
            name, seen = aliases[name]["parent"], seen + 1
        ic = icons.get(name)
        if ic is None:
            return None
        w, h = ic.get("width", w0), ic.get("height", h0)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                f'viewBox="{ic.get("left", 0)} {ic.get("top", 0)} {w} {h}">{ic["body"]}</svg>')

    keys = {c.key for c in concepts}
    out: dict[str, str] = {}
    for cp, name in chars.items():
        k = E.norm_hex(cp)
        if k in keys and k not in out and (s := svg(name)) is not None:
            out[k] = s
    for name, k in _name_index(root, concepts).items():
        if k not in out and (s := svg(name)) is not None:
            out[k] = s
    if not out:
        raise DataError(f"no {artist} icons under {root / FOLDERS[artist]}; {_FIX}")
    return out


def _render_svg(text: str):
    import io

    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(bytestring=text.encode(), output_width=4 * E.SPRITE, output_height=4 * E.SPRITE)
    return E._fit_rgba(Image.open(io.BytesIO(png)))


def bank_path(root: Path = E.EMOJI_DIR) -> Path:
    return root / f"sprites{E.SPRITE}-v{BANK_VERSION}.npy"


def build_bank(root: Path = E.EMOJI_DIR, verbose: bool = True) -> Path:
    """Render :data:`EXTRA_ARTISTS` for the concepts of the v1 bank into ``sprites64-v2.npy``
    (``(C, 4, 64, 64, 4)`` uint8, alpha 0 where the set has no icon); atomic write."""
    concepts, _ = E.load()
    arr = np.zeros((len(concepts), len(EXTRA_ARTISTS), E.SPRITE, E.SPRITE, 4), dtype=np.uint8)
    for a, artist in enumerate(EXTRA_ARTISTS):
        svgs = icon_svgs(root, artist, concepts)
        for i, c in enumerate(concepts):
            if c.key in svgs and (img := _render_svg(svgs[c.key])) is not None:
                arr[i, a] = np.asarray(img, dtype=np.uint8)
        if verbose:
            print(f"[emoji] {artist}: {len(svgs)}/{len(concepts)} concepts", flush=True)

    def write_npy(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, arr)

    out = bank_path(root)
    atomic_write(out, write_npy)
    return out


def load_bank(root: Path = E.EMOJI_DIR) -> np.ndarray:
    """The v2 bank ``(C, 4, 64, 64, 4)`` uint8, memory-mapped; rendered on first use (about a minute)."""
    path = bank_path(root)
    if not path.is_file():
        print(f"[emoji] rendering the bench-3 sprite bank {path} (once)", flush=True)
        build_bank(root)
    return np.load(path, mmap_mode="r")


def main(argv: list[str] | None = None) -> None:
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Render the bench-3 sprite bank (sprites64-v2) from the Iconify sets.")
    ap.add_argument("--root", type=Path, default=E.EMOJI_DIR)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    if bank_path(a.root).is_file() and not a.force:
        print(f"[emoji] {bank_path(a.root)} exists")
        return
    t0 = time.time()
    out = build_bank(a.root)
    print(f"[emoji] wrote {out} ({out.stat().st_size / 2**20:.0f} MiB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
