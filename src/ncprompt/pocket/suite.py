"""The pocket suite: downstream emoji datasets in the roles of CoOp's 11 datasets and ImageNet's variants.

Registered in :data:`ncprompt.data.registry.DATASETS` (importing this module registers them); the
mapping and the split rule are in ``docs/datasets.md``.  Every dataset is a set of emoji concepts
(class names are the emojibase labels, in a seeded order whose first half is CoOp's base set).
Within a dataset, train (16 per class), val (4 per class) and test images are drawn i.i.d. from
the same mix of artists (:data:`SUITE_ARTISTS`: Noto, Twemoji, OpenMoji colour; OpenMoji alone in
the DTD and EuroSAT roles, a source rare in pretraining, see ``_add_theme``), each a fresh
render (background, scale, position, rotation, blur, noise: :data:`~ncprompt.pocket.world.SUITE_RENDER`)
seeded by ``(dataset, seed, split)``; pretraining draws from another random stream.  The four
shifted variants of ``emoji_generic`` keep its classes (or the subset an artist drew) and change
the images: new harder draws of the same artists (``_v2``), OpenMoji line art (``_sketch``, nearly
absent from pretraining), Symbola monochrome glyphs (``_mono``, never in pretraining) and the 3D
Fluent renditions (``_r``, an artist the downstream sets never use).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ncprompt.data.base import ArrayImages, DatasetSplits, LabeledImages
from ncprompt.data.registry import DATASETS
from ncprompt.pocket import world as W

TEMPLATES = ["{} emoji"]
"""The hand-written zero-shot prompt of every suite dataset: the emoji world's counterpart of CoOp's
per-dataset templates (a frame of the pretraining captions, as "a photo of a {}." is of web alt-text)."""
SUITE_ARTISTS = ("google", "twitter", "openmoji")
"""The artists the downstream datasets are drawn from (train, val and test alike)."""
SIZES = (16, 4)
"""Images per class in train and val; test has :func:`test_per_class` per class."""


def test_per_class(k: int) -> int:
    """Test images per class: about 3,000 in all, between 8 and 100 per class."""
    return int(min(100, max(8, 3000 // k)))


@dataclass(frozen=True)
class SuiteSet:
    """A registered dataset: which concepts (in class order), drawn by which artists, rendered how."""

    name: str
    role: str
    select: Callable[[], list[int]]
    artists: tuple[str, ...] = SUITE_ARTISTS
    render: W.RenderStyle = W.SUITE_RENDER
    source: str | None = None
    doc: str = ""
    test_artists: tuple[str, ...] | None = None  # None: the same artists as train and val
    in_suite: bool = True  # False: the artist-mix version of a role now played by a one-artist set


def _order(name: str, idx: list[int]) -> list[int]:
    """A seeded order of the classes (its first half is the base set)."""
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    return [idx[i] for i in perm.tolist()]


def _drawn_by(idx: list[int], artists: tuple[str, ...]) -> list[int]:
    has = W.catalogue().has
    cols = [W.ARTIST[a] for a in artists]
    return [i for i in idx if bool(has[i, cols].all())]


def _by_subgroup(name: str, subgroups: tuple[str, ...], limit: int | None = None) -> Callable[[], list[int]]:
    def select() -> list[int]:
        cat = W.catalogue()
        idx = _drawn_by([i for i, c in enumerate(cat.concepts) if c.subgroup in subgroups], SUITE_ARTISTS)
        return _order(name, idx)[:limit]

    return select


def _generic() -> list[int]:
    """500 concepts drawn at random (seeded) among all but the flags, drawn by every colour artist."""
    cat = W.catalogue()
    idx = [i for i, c in enumerate(cat.concepts) if c.group != "flags"]
    idx = _drawn_by(idx, SUITE_ARTISTS + ("fluent",))
    return _order("emoji_generic", idx)[:500]


def _variant_of(select: Callable[[], list[int]], artists: tuple[str, ...]) -> Callable[[], list[int]]:
    return lambda: _drawn_by(select(), artists)


SETS: dict[str, SuiteSet] = {}


def _add(s: SuiteSet) -> None:
    SETS[s.name] = s


THEMES: dict[str, tuple[str, tuple[str, ...], str, int | None]] = {}
"""Thematic datasets: name -> (role, subgroups, doc, limit); bench 3 (:mod:`~ncprompt.pocket.suite3`) reuses them."""


def _add_theme(
    name: str, role: str, subgroups: tuple[str, ...], doc: str, limit: int | None = None, artist: str | None = None
) -> None:
    """Register a thematic dataset: the concepts of ``subgroups`` (the first ``limit`` of its seeded order).

    With ``artist``, the role is played by ``{name}_{artist}``: the same classes (same order, so the same
    base/new split) drawn by that one artist, a source pretraining saw rarely, as EuroSAT's satellite tiles
    and DTD's texture close-ups are rare on the web; ``name`` stays registered with the artist mix, outside
    the suite (the earlier version of the role, which docs/results.md's grids use)."""
    THEMES[name] = (role, subgroups, doc, limit)
    select = _by_subgroup(name, subgroups, limit)
    if artist is None:
        _add(SuiteSet(name, role, select, doc=doc))
        return
    _add(SuiteSet(name, f"{role}, artist mix (earlier version)", select, doc=doc, in_suite=False))
    _add(SuiteSet(f"{name}_{artist}", role, _variant_of(select, (artist,)), artists=(artist,),
                  doc=f"{doc}, drawn by {artist} alone"))


_add(SuiteSet("emoji_generic", "ImageNet", _generic, doc="500 concepts of every group but flags"))
_add(
    SuiteSet(
        "emoji_generic_v2",
        "ImageNet-V2",
        _generic,
        render=W.V2_RENDER,
        source="emoji_generic",
        doc="new, harder draws (smaller, more rotated, busier backgrounds) of the same artists",
    )
)
_add(
    SuiteSet(
        "emoji_generic_sketch",
        "ImageNet-Sketch",
        _variant_of(_generic, ("lineart",)),
        artists=("lineart",),
        source="emoji_generic",
        doc="OpenMoji black line art (2% of pretraining)",
    )
)
_add(
    SuiteSet(
        "emoji_generic_mono",
        "ImageNet-A",
        _variant_of(_generic, ("symbola",)),
        artists=("symbola",),
        source="emoji_generic",
        doc="Symbola monochrome glyphs (never in pretraining), the classes Symbola draws",
    )
)
_add(
    SuiteSet(
        "emoji_generic_r",
        "ImageNet-R",
        _generic,
        artists=("fluent",),
        source="emoji_generic",
        doc="Fluent 3D renditions (in pretraining, never in the downstream sets)",
    )
)
_add_theme(
    "emoji_objects",
    "Caltech101",
    (
        "clothing",
        "household items",
        "tools",
        "office supplies",
        "musical instruments",
        "computer",
        "light, film & video",
        "books & paper",
        "mail",
        "writing",
        "lock & keys",
        "science equipment",
        "medical",
        "money",
        "phone",
        "sound",
        "music",
        "other objects",
        "dishware",
    ),
    "everyday objects",
    limit=100,
)
_add_theme(
    "emoji_animals",
    "OxfordPets",
    ("mammals", "birds", "reptiles", "amphibians", "marine life", "bugs"),
    "animals",
    limit=37,
)
_add_theme(
    "emoji_transport",
    "StanfordCars",
    ("ground transportation", "water transportation", "air transportation"),
    "vehicles",
)
_add_theme(
    "emoji_plants",
    "Flowers102",
    ("flowers", "other plants", "fruit", "vegetables"),
    "flowers, plants, fruit, vegetables",
)
_add_theme(
    "emoji_food", "Food101", ("cooked / prepared", "asian", "sweets & candy", "drink"), "dishes, sweets and drinks"
)
_add_theme(
    "emoji_flags",
    "FGVCAircraft",
    ("country flags", "subdivision flags"),
    "flags of countries (fine-grained)",
    limit=100,
)
_add_theme(
    "emoji_places",
    "SUN397",
    (
        "buildings",
        "religious buildings",
        "other places",
        "geographic locations",
        "globes & maps",
        "weather",
        "hotel",
    ),
    "places, buildings, sky and weather",
)
_add_theme(
    "emoji_symbols",
    "DTD",
    (
        "shapes & colors",
        "arrows",
        "audio & video symbols",
        "zodiac signs",
        "religious symbols",
        "transport signs",
        "warning symbols",
        "other symbols",
        "math symbols",
        "keypad characters",
        "alphanumeric symbols",
    ),
    "abstract signs, shapes and symbols",
    limit=47,
    artist="openmoji",
)
_add_theme(
    "emoji_hands",
    "EuroSAT",
    ("fingers open", "hand signs", "finger pointing", "fingers closed", "hands", "hand props"),
    "hand gestures (few classes, look alike)",
    limit=10,
    artist="openmoji",
)
_add_theme(
    "emoji_activities",
    "UCF101",
    ("activities", "athletics", "resting", "sports", "games & hobbies"),
    "people doing things, sports",
    limit=101,
)

_add(
    SuiteSet(
        "emoji_generic_xartist",
        "cross-artist probe",
        _variant_of(_generic, ("google", "twitter", "openmoji")),
        artists=("google", "twitter"),
        test_artists=("openmoji",),
        source="emoji_generic",
        doc="train and val drawn by Noto and Twemoji, test by OpenMoji (cross-artist probe)",
    )
)

SUITE = [n for n, s in SETS.items() if s.source is None and s.in_suite]
"""The 11 datasets (ImageNet role first)."""
VARIANTS = [n for n, s in SETS.items() if s.source is not None and s.test_artists is None]
"""The shifted variants of ``emoji_generic``."""


def _generator(name: str, seed: int, split: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"suite/{name}/{seed}/{split}".encode()) + 1000003 * (seed + 1))


def render_split(
    concepts: list[int], per_class: int, artists: tuple[str, ...], style: W.RenderStyle, g: torch.Generator
) -> ArrayImages:
    """``per_class`` fresh renders of each concept (labels = position in ``concepts``), shuffled."""
    k = len(concepts)
    labels = torch.arange(k).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=g)]
    concept = torch.tensor(concepts)[labels]
    artist = W.sample_artists(concept, {a: 1.0 for a in artists}, g)
    chunks = []
    for s in range(0, len(labels), 2048):
        img, _, _ = W.render(concept[s : s + 2048], artist[s : s + 2048], g, style)
        chunks.append(W.to_uint8_hwc(img))
    return ArrayImages(np.concatenate(chunks), labels.numpy())


def build(name: str, seed: int = 0) -> DatasetSplits:
    """The dataset ``name`` of :data:`SETS` (deterministic under ``seed``)."""
    s = SETS[name]
    concepts = s.select()
    cat = W.catalogue()
    per = {"train": SIZES[0], "val": SIZES[1], "test": test_per_class(len(concepts))}
    splits = {
        sp: render_split(
            concepts,
            n,
            (s.test_artists or s.artists) if sp == "test" else s.artists,
            s.render,
            _generator(name, seed, sp),
        )
        for sp, n in per.items()
    }
    return DatasetSplits(
        name=name,
        classnames=[cat.concepts[i].label for i in concepts],
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        templates=list(TEMPLATES),
    )


def _register(name: str) -> None:
    s = SETS[name]

    def factory(seed: int = 0) -> DatasetSplits:
        return build(name, seed)

    factory.__doc__ = f"Pocket emoji suite ({s.role} role): {s.doc}."
    DATASETS.register(name)(factory)


for _name in SETS:
    _register(_name)


# --------------------------------------------------------------------------------------------
# zero-shot evaluation


@torch.no_grad()
def zero_shot_accuracy(
    model,
    tokenizer,
    preprocess,
    data: DatasetSplits,
    split: str = "test",
    max_images: int | None = None,
    template: str | None = None,
    batch_size: int = 500,
) -> float:
    """Top-1 zero-shot accuracy with ``model.encode_image`` / ``encode_text`` and ``template``
    (default: the dataset's first template), on at most ``max_images`` images (evenly strided)."""
    images: LabeledImages = data.split(split)
    n = len(images)
    idx = np.arange(n) if not max_images or max_images >= n else np.linspace(0, n - 1, max_images).round().astype(int)
    template = template or data.templates[0]
    txt = model.encode_text(tokenizer([template.format(c) for c in data.classnames]), normalize=True)
    correct = 0
    for s in range(0, len(idx), batch_size):
        chunk = idx[s : s + batch_size]
        x = torch.stack([preprocess(images.load(int(i))) for i in chunk])
        img = model.encode_image(x, normalize=True)
        pred = (img @ txt.t()).argmax(1).numpy()
        correct += int((pred == images.labels[chunk]).sum())
    return correct / len(idx)


def zero_shot(
    weights=None,
    names: list[str] | None = None,
    seed: int = 0,
    max_images: int | None = None,
    template: str | None = None,
) -> dict[str, float]:
    """Zero-shot test accuracy of the pocket model (committed weights unless ``weights``) per suite dataset."""
    from ncprompt.pocket.model import create_pocket

    model, preprocess, tokenizer = create_pocket(weights=weights)
    return {
        name: zero_shot_accuracy(
            model, tokenizer, preprocess, DATASETS.get(name)(seed=seed), max_images=max_images, template=template
        )
        for name in (names or SUITE + VARIANTS)
    }


def zero_shot_parser(description: str):
    """The options of the zero-shot table commands (this module's and :mod:`~ncprompt.pocket.suite3`'s)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--weights", default=None, help="safetensors file (default: the committed weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--template", action="append", help="prompt template(s), default: each dataset's first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--split", default="test", choices=["val", "test"], help="the split to score (val: for choices)")
    return ap


def print_zero_shot_table(a, names: list[str], roles: dict[str, str]) -> None:
    """A markdown table of zero-shot accuracy per dataset and template (options of :func:`zero_shot_parser`)."""
    from ncprompt.pocket.model import create_pocket

    torch.set_num_threads(a.threads)
    model, preprocess, tokenizer = create_pocket(weights=a.weights)
    templates = a.template or [None]
    head = " | ".join(t or TEMPLATES[0] for t in templates)
    print(f"| dataset | role | classes | chance | {head} |\n|---|---|---|---|" + "---|" * len(templates))
    for name in names:
        data = DATASETS.get(name)(seed=a.seed)
        accs = [
            zero_shot_accuracy(model, tokenizer, preprocess, data, a.split, max_images=a.max_images, template=t)
            for t in templates
        ]
        k = data.num_classes
        print(
            f"| {name} | {roles[name]} | {k} | {100 / k:.1f}% | "
            + " | ".join(f"{100 * x:.1f}%" for x in accs)
            + " |"
        )


def main(argv: list[str] | None = None) -> None:
    a = zero_shot_parser("Zero-shot accuracy of the pocket model on the pocket suite.").parse_args(argv)
    print_zero_shot_table(a, SUITE + VARIANTS, {n: s.role for n, s in SETS.items()})


if __name__ == "__main__":
    main()
