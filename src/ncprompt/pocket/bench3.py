"""Bench 3: ten artists per concept and a fixed three-way split of each concept's artworks.

The artist axis is :data:`ARTISTS3`: the six of the v1 bank (``emoji.ARTISTS``, same indices) then
the four Iconify sets of :mod:`ncprompt.pocket.emoji_extra`.  :func:`split_artworks` gives every
(concept, artist) artwork one role:

* the *main* colour artists (:data:`MAIN`) of a concept with at least :data:`MIN_ARTWORKS` of them:
  a seeded permutation (seed: the concept's key, so the split never depends on the run seed) gives
  1 **test** artwork, 1 **val** artwork, 1 **train** artwork (2 when the concept has 6) and the rest
  (at least 1) to **pretraining**;  a concept with fewer main artworks gives them all to pretraining
  and is no bench-3 class;
* the *shift* artists (:data:`SHIFT`: Fluent 3D, OpenMoji line art, Fluent high contrast): a seeded
  coin per concept puts the artwork in pretraining or **held out** for the shifted variants;
* Symbola: always held out (never in pretraining);
* a shift artwork of the same design as a test or val artwork (:data:`SAME_DESIGN`): held out.

So a test (or val) image's artwork is in neither the shots nor pretraining, while the held-out
artist differs from class to class and every artist's style is in pretraining and in training pools.
The split is fixed (it is tied to the pretrained model); the run seed moves only the renders.

Pretraining reads :func:`pretrain_catalogue`: the catalogue with every non-pretraining artwork
erased, so it cannot draw one.  :func:`write_pack` stores exactly that (32 px premultiplied uint8
sprites and the concepts' names and tags) in one compressed ``.npz`` for a machine without
``.data/`` (``python -m ncprompt.pocket.bench3 pack``); :func:`load_pack` reads it back bit for bit.
"""

from __future__ import annotations

import io
import json
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ncprompt.data.base import DataError
from ncprompt.pocket import emoji as E
from ncprompt.pocket import emoji_extra as X
from ncprompt.pocket import world as W
from ncprompt.utils import atomic_write

ARTISTS3 = E.ARTISTS + X.EXTRA_ARTISTS
MAIN = ("google", "twitter", "openmoji", "emojione", "emojione_v1", "fluent_flat")
"""Colour artists split three ways per concept (the downstream sets' artists)."""
SHIFT = ("fluent", "lineart", "fluent_hc")
"""Styles of the shifted variants: per concept in pretraining or held out (a seeded coin)."""
NEVER = ("symbola",)
"""Never in pretraining."""
SAME_DESIGN = {"openmoji": ("lineart",), "fluent_flat": ("fluent", "fluent_hc")}
"""Shift styles drawn from the same design as a main artist's artwork (OpenMoji's black line art of its
colour art; Fluent's 3D and high-contrast versions of its flat art): held out whenever that main
artwork is a test or val artwork, so no version of a test design reaches pretraining."""
MIN_ARTWORKS = 4
"""Main artworks a concept needs to be a bench-3 class (test, val, train, pretraining)."""
NONE, PRETRAIN, TRAIN, VAL, TEST, HELD_OUT = -1, 0, 1, 2, 3, 4
ROLE_NAMES = {PRETRAIN: "pretrain", TRAIN: "train", VAL: "val", TEST: "test", HELD_OUT: "held out"}
PRETRAIN_MIX3 = {
    "google": 0.15,
    "twitter": 0.15,
    "openmoji": 0.12,
    "emojione": 0.12,
    "emojione_v1": 0.10,
    "fluent_flat": 0.14,
    "fluent": 0.14,
    "lineart": 0.04,
    "fluent_hc": 0.04,
    "symbola": 0.0,
}
"""Artist weights of bench-3 pretraining (renormalised over the concept's pretraining artworks)."""
PACK_VERSION = 1
DEFAULT_PACK = Path("runs/bench3/pretrain-pack.npz")


def _rng(key: str, salt: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"bench3/{salt}/{key}".encode()))


def split_artworks(has: np.ndarray, keys: list[str], artists: tuple[str, ...] = ARTISTS3) -> np.ndarray:
    """``(C, A)`` int8 roles (:data:`PRETRAIN` ... :data:`HELD_OUT`, :data:`NONE` where not drawn) of the
    artworks ``has[c, a]``; deterministic in the concepts' keys (see the module docstring)."""
    has = np.asarray(has, dtype=bool)
    roles = np.full(has.shape, NONE, dtype=np.int8)
    main = [artists.index(a) for a in MAIN if a in artists]
    shift = [artists.index(a) for a in SHIFT if a in artists]
    never = [artists.index(a) for a in NEVER if a in artists]
    for c, key in enumerate(keys):
        drawn = [a for a in main if has[c, a]]
        if len(drawn) >= MIN_ARTWORKS:
            perm = [drawn[i] for i in _rng(key, "main").permutation(len(drawn))]
            n_train = 2 if len(drawn) >= 6 else 1
            roles[c, perm[0]], roles[c, perm[1]] = TEST, VAL
            roles[c, perm[2 : 2 + n_train]] = TRAIN
            roles[c, perm[2 + n_train :]] = PRETRAIN
        else:
            roles[c, drawn] = PRETRAIN
        coins = _rng(key, "shift").random(len(shift))
        for a, u in zip(shift, coins, strict=True):
            if has[c, a]:
                roles[c, a] = HELD_OUT if u < 0.5 else PRETRAIN
        for a in never:
            if has[c, a]:
                roles[c, a] = HELD_OUT
        for a, versions in SAME_DESIGN.items():
            if a in artists and roles[c, artists.index(a)] in (TEST, VAL):
                for v in versions:
                    if v in artists and has[c, artists.index(v)]:
                        roles[c, artists.index(v)] = HELD_OUT
    return roles


def split_counts(roles: np.ndarray, artists: tuple[str, ...] = ARTISTS3) -> dict:
    """Counts for the docs: classes, artworks per role, per artist and role."""
    main = [artists.index(a) for a in MAIN]
    n_main = (roles[:, main] != NONE).sum(1)
    return {
        "concepts": int(roles.shape[0]),
        "classes (>= 4 main artworks)": int((roles == TEST).any(1).sum()),
        "concepts by main artworks": {int(k): int((n_main == k).sum()) for k in np.unique(n_main)},
        "artworks by role": {ROLE_NAMES[r]: int((roles == r).sum()) for r in ROLE_NAMES},
        "by artist": {
            a: {ROLE_NAMES[r]: int((roles[:, i] == r).sum()) for r in ROLE_NAMES} for i, a in enumerate(artists)
        },
    }


# --------------------------------------------------------------------------------------------
# the bench-3 catalogue


def to_u8(sprites: torch.Tensor) -> torch.Tensor:
    """Float sprites in [0, 1] -> uint8 (rounded): the form bench 3 stores and packs."""
    return sprites.mul(255).round().clamp(0, 255).to(torch.uint8)


@lru_cache(maxsize=1)
def sprites3() -> tuple[list[E.Concept], torch.Tensor]:
    """``(concepts, sprites)``: the v1 and v2 banks at 32 px, ``(C, 10, 4, 32, 32)`` uint8 premultiplied."""
    concepts, v1 = E.load()
    v2 = X.load_bank()
    if v2.shape[0] != len(concepts):
        raise DataError(f"bench-3 bank has {v2.shape[0]} concepts, the v1 bank {len(concepts)}; rebuild it "
                        "with `python -m ncprompt.pocket.emoji_extra --force`")
    return concepts, torch.cat([to_u8(W.downsample(v1)), to_u8(W.downsample(v2))], 1)


def _catalogue(concepts: list[E.Concept], sprites_u8: torch.Tensor) -> W.Catalogue:
    return W.build_catalogue(concepts, sprites_u8, ARTISTS3)


@lru_cache(maxsize=1)
def roles() -> np.ndarray:
    """The fixed split of the installed banks (:func:`split_artworks`)."""
    concepts, spr = sprites3()
    return split_artworks((spr[:, :, 3].flatten(2).amax(2) > 0).numpy(), [c.key for c in concepts])


@lru_cache(maxsize=1)
def catalogue3() -> W.Catalogue:
    """Every artwork of the ten artists (the downstream sets draw from it by role)."""
    return _catalogue(*sprites3())


def seen_sprites(sprites_u8: torch.Tensor, role: np.ndarray) -> torch.Tensor:
    """``sprites`` with every artwork that is not :data:`PRETRAIN` erased (all zero: not drawn)."""
    keep = torch.from_numpy(role == PRETRAIN).view(*role.shape, 1, 1, 1)
    return sprites_u8 * keep


def pretrain_catalogue() -> W.Catalogue:
    """The catalogue pretraining may see: the pretraining artworks only."""
    concepts, spr = sprites3()
    return _catalogue(concepts, seen_sprites(spr, roles()))


# --------------------------------------------------------------------------------------------
# the pack: what pretraining reads, for a machine without .data/


def write_pack(path: Path | str, concepts: list[E.Concept], sprites_u8: torch.Tensor) -> Path:
    """One compressed ``.npz``: ``sprites`` ``(C, A, 4, 32, 32)`` uint8 and ``meta`` (JSON: version,
    artists, concepts with names, tags and groups); atomic write."""
    path = Path(path)
    meta = json.dumps({"version": PACK_VERSION, "artists": ARTISTS3, "concepts": [c.__dict__ for c in concepts]})
    buf = io.BytesIO()
    np.savez_compressed(buf, sprites=sprites_u8.numpy(), meta=np.frombuffer(meta.encode(), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    return path


def load_pack(path: Path | str) -> W.Catalogue:
    """The catalogue of a pack written by :func:`write_pack` (identical to the one it was made from)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"bench-3 pack {path} not found; write it with `python -m ncprompt.pocket.bench3 pack`")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        sprites = torch.from_numpy(z["sprites"].copy())
    if meta.get("version") != PACK_VERSION or tuple(meta["artists"]) != ARTISTS3:
        raise DataError(f"{path} is a pack of another version or artist axis; rewrite it with "
                        "`python -m ncprompt.pocket.bench3 pack`")
    concepts = [E.Concept(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                for c in meta["concepts"]]
    return _catalogue(concepts, sprites)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Bench 3: the artwork split's counts, or the pretraining pack.")
    ap.add_argument("what", choices=["counts", "pack"])
    ap.add_argument("--output", type=Path, default=DEFAULT_PACK, help="pack file (default %(default)s)")
    a = ap.parse_args(argv)
    if a.what == "counts":
        print(json.dumps(split_counts(roles()), indent=1))
        return
    concepts, spr = sprites3()
    out = write_pack(a.output, concepts, seen_sprites(spr, roles()))
    print(f"[bench3] wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
