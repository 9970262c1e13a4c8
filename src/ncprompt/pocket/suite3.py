"""The bench-3 suite: the 11 roles and the shifted variants, tested on artworks nothing trained on.

Registered beside the earlier suite (which stays unchanged) under ``b3_`` names.  The classes of
each role come from the same subgroups, limits and seeded class order rule as
:mod:`ncprompt.pocket.suite` (``THEMES``), among the concepts :mod:`~ncprompt.pocket.bench3` can
split (at least 4 main artworks).  Every class has its own artworks per split
(:func:`~ncprompt.pocket.bench3.split_artworks`): train images are renders of its train artwork(s),
val of its val artwork, test of its test artwork; none of the val or test artworks is in
pretraining.  The variants keep the training pools of ``b3_generic`` and change the test images:
``_v2`` harder renders of the test artworks, ``_sketch`` the held-out OpenMoji line art, ``_mono``
Symbola, ``_r`` the held-out Fluent 3D artworks, ``_hc`` the held-out Fluent high-contrast glyphs
(each on the classes whose artwork of that style is held out).

The data seed of a bench-3 dataset follows the run seed (``data_seed_follows_run`` on its
builder, read by :func:`ncprompt.data.dataset_options`): seeds 1-3 draw their own images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ncprompt.data.base import ArrayImages, DatasetSplits
from ncprompt.data.registry import DATASETS
from ncprompt.pocket import bench3 as B3
from ncprompt.pocket import suite as S
from ncprompt.pocket import world as W

PREFIX = "b3_"
SPLIT_ROLES = {"train": B3.TRAIN, "val": B3.VAL, "test": B3.TEST}


@dataclass(frozen=True)
class Bench3Set:
    """A bench-3 dataset: its classes, and where its test images come from."""

    name: str
    role: str
    select: Callable[[], list[int]]
    doc: str
    test_artist: str | None = None  # None: the classes' test artworks; else that artist's held-out artworks
    render: W.RenderStyle = W.SUITE_RENDER
    source: str | None = None


def eligible() -> list[int]:
    """Concepts with a test artwork (the bench-3 classes)."""
    return np.flatnonzero((B3.roles() == B3.TEST).any(1)).tolist()


def _themed(name: str, subgroups: tuple[str, ...], limit: int | None) -> Callable[[], list[int]]:
    def select() -> list[int]:
        cat = B3.catalogue3()
        return S._order(name, [i for i in eligible() if cat.concepts[i].subgroup in subgroups])[:limit]

    return select


def _generic() -> list[int]:
    """500 concepts drawn at random (seeded) among the eligible ones of every group but flags."""
    cat = B3.catalogue3()
    return S._order(PREFIX + "generic", [i for i in eligible() if cat.concepts[i].group != "flags"])[:500]


def _held_out_by(artist: str) -> Callable[[], list[int]]:
    col = B3.ARTISTS3.index(artist)
    return lambda: [i for i in _generic() if B3.roles()[i, col] == B3.HELD_OUT]


SETS3: dict[str, Bench3Set] = {}
SETS3[PREFIX + "generic"] = Bench3Set(PREFIX + "generic", "ImageNet", _generic, "500 concepts of every group but flags")
for _theme, (_role, _subgroups, _doc, _limit) in S.THEMES.items():
    _name = PREFIX + _theme.removeprefix("emoji_")
    SETS3[_name] = Bench3Set(_name, _role, _themed(_name, _subgroups, _limit), _doc)
_VARIANTS = (
    ("v2", "ImageNet-V2", None, W.V2_RENDER, "harder renders (smaller, more rotated, busier) of the test artworks"),
    ("sketch", "ImageNet-Sketch", "lineart", W.SUITE_RENDER, "held-out OpenMoji line art"),
    ("mono", "ImageNet-A", "symbola", W.SUITE_RENDER, "Symbola monochrome glyphs (never in pretraining)"),
    ("r", "ImageNet-R", "fluent", W.SUITE_RENDER, "held-out Fluent 3D renditions"),
    ("hc", "extra shift", "fluent_hc", W.SUITE_RENDER, "held-out Fluent high-contrast glyphs"),
)
for _suffix, _role, _artist, _render, _doc in _VARIANTS:
    _name = f"{PREFIX}generic_{_suffix}"
    SETS3[_name] = Bench3Set(_name, _role, _held_out_by(_artist) if _artist else _generic, _doc, _artist, _render,
                             PREFIX + "generic")

SUITE3 = [n for n, s in SETS3.items() if s.source is None]
"""The 11 bench-3 datasets (ImageNet role first)."""
VARIANTS3 = [n for n, s in SETS3.items() if s.source is not None]


def class_count(name: str) -> int:
    """Classes of a pocket dataset of bench 1 or 3 (variants included); KeyError for other names."""
    found = SETS3.get(name) or S.SETS.get(name)
    if found is None:
        raise KeyError(f"{name!r} is not a pocket suite dataset")
    return len(found.select())


def suite_sizes(bench: int) -> dict[str, int]:
    """{dataset: classes} of bench 3's suite (``bench`` 3) or the earlier one (``bench`` 1), in suite order."""
    return {d: class_count(d) for d in (SUITE3 if bench == 3 else S.SUITE)}


def allowed_artworks(concepts: list[int], split: str, test_artist: str | None = None) -> torch.Tensor:
    """``(K, A)`` bool: the artworks a split of these classes is drawn from."""
    r = torch.from_numpy(B3.roles()[concepts])
    if split == "test" and test_artist is not None:
        out = torch.zeros_like(r, dtype=torch.bool)
        col = B3.ARTISTS3.index(test_artist)
        out[:, col] = r[:, col] == B3.HELD_OUT
        return out
    return r == SPLIT_ROLES[split]


def render_pool(
    concepts: list[int], per_class: int, allowed: torch.Tensor, style: W.RenderStyle, g: torch.Generator
) -> ArrayImages:
    """``per_class`` fresh renders of each class (labels = position in ``concepts``), each of one of its
    ``allowed`` artworks (uniform), shuffled."""
    cat = B3.catalogue3()
    labels = torch.arange(len(concepts)).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=g)]
    concept = torch.tensor(concepts)[labels]
    artist = torch.multinomial(allowed[labels].float(), 1, generator=g).squeeze(1)
    chunks = []
    for s in range(0, len(labels), 2048):
        img, _, _ = W.render(concept[s : s + 2048], artist[s : s + 2048], g, style, cat)
        chunks.append(W.to_uint8_hwc(img))
    return ArrayImages(np.concatenate(chunks), labels.numpy())


def build3(name: str, seed: int = 0) -> DatasetSplits:
    """The bench-3 dataset ``name`` (deterministic under ``seed``; the artwork split does not move)."""
    s = SETS3[name]
    concepts = s.select()
    n_test = S.test_per_class(len(concepts))
    per = {"train": S.SIZES[0], "val": n_test, "test": n_test}  # val as large as test: choices are made on it
    splits = {
        sp: render_pool(concepts, n, allowed_artworks(concepts, sp, s.test_artist), s.render,
                        S._generator(name, seed, sp))
        for sp, n in per.items()
    }
    cat = B3.catalogue3()
    return DatasetSplits(name=name, classnames=[cat.concepts[i].label for i in concepts], train=splits["train"],
                         val=splits["val"], test=splits["test"], templates=list(S.TEMPLATES))


def _register(name: str) -> None:
    s = SETS3[name]

    def factory(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
        return build3(name, seed)

    factory.__doc__ = f"Pocket bench 3 ({s.role} role): {s.doc}; test artworks in neither shots nor pretraining."
    factory.data_seed_follows_run = True  # type: ignore[attr-defined]
    DATASETS.register(name)(factory)


for _n in SETS3:
    _register(_n)


def main(argv: list[str] | None = None) -> None:
    a = S.zero_shot_parser("Zero-shot accuracy of a pocket model on the bench-3 datasets.").parse_args(argv)
    S.print_zero_shot_table(a, SUITE3 + VARIANTS3, {n: s.role for n, s in SETS3.items()})


if __name__ == "__main__":
    main()
