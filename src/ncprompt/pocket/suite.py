"""The pocket suite: downstream classification datasets drawn from the pocket world.

Registered in :data:`ncprompt.data.registry.DATASETS` (importing this module registers them):

=========================  =======  ===============================================================
name                       classes  content
=========================  =======  ===============================================================
``pocket_garments``        10       garment type, random colour / background / texture
``pocket_digits``          10       digit ("digit zero" ...), random colour / background
``pocket_colours``         8        object colour ("red object" ...), random object and background
``pocket_textures``        5        background texture ("striped background" ...)
``pocket_colour_garment``  80       colour x garment ("red t-shirt" ...), garment-major order
``pocket_compositional``   20       only the colour x object combinations held out of pretraining
``pocket_fmnist_real``     10       real grayscale Fashion-MNIST (test split; train from FMNIST train)
``pocket_mnist_real``      10       real grayscale MNIST digits never used in pretraining
=========================  =======  ===============================================================

Every split is uint8 RGB 32x32 (:class:`ArrayImages`), deterministic under ``seed``.  Shapes of the
train/val splits come from the ``downstream`` pool and those of the test split from the ``test``
pool (Fashion-MNIST test images, held-out MNIST digits), so no test image was seen in pretraining.
Generated sets are rendered in :data:`~ncprompt.pocket.world.DOWNSTREAM_STYLE` (sensor noise, blur,
gradient backgrounds, smaller objects) so their statistics differ from pretraining.  Templates are
``["a photo of a {}."]``; class names are ordered so that the first ceil(K/2) make a sensible base
set.  :func:`zero_shot` / ``python -m ncprompt.pocket.suite`` measure zero-shot accuracy.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ncprompt.data.base import ArrayImages, DatasetSplits, LabeledImages
from ncprompt.data.registry import DATASETS
from ncprompt.pocket import world as W

TEMPLATES = ["a photo of a {}."]
SUITE = [
    "pocket_garments",
    "pocket_digits",
    "pocket_colours",
    "pocket_textures",
    "pocket_colour_garment",
    "pocket_compositional",
    "pocket_fmnist_real",
    "pocket_mnist_real",
]

COLOUR_CLASSNAMES = [f"{c} object" for c in W.COLOURS]
TEXTURE_CLASSNAMES = [f"{t} background" for t in W.TEXTURES]
COLOUR_GARMENT = [(c, g) for g in W.GARMENTS for c in W.COLOURS]
COLOUR_GARMENT_CLASSNAMES = [f"{c} {g}" for c, g in COLOUR_GARMENT]
COMPOSITIONAL_CLASSNAMES = [f"{c} {o}" for c, o in W.HELD_OUT]

# images per class: (train, val, test)
SIZES_10 = (64, 16, 100)
SIZES_MANY = (16, 4, 25)


def _generator(name: str, seed: int, split: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{name}/{seed}/{split}".encode()) + 1000003 * seed)


def _scene(
    labels: torch.Tensor,
    g: torch.Generator,
    obj: torch.Tensor | None = None,
    colour: torch.Tensor | None = None,
    texture: torch.Tensor | None = None,
    allow_held_out: bool = False,
) -> W.Scene:
    """A downstream scene: whatever is not given is drawn at random (with enough contrast)."""
    n = len(labels)
    if obj is None:
        obj = torch.randint(0, len(W.OBJECTS), (n,), generator=g)
    if colour is None:
        cw = torch.ones(n, len(W.COLOUR_NAMES))
        cw[:, 8:] = 0.25  # brown, gray, black rarer
        if not allow_held_out:
            cw[W.HELD_MATRIX.T[obj]] = 0.0
        colour = torch.multinomial(cw, 1, generator=g).squeeze(1)
    bg = torch.multinomial(W.ALLOWED_BG[colour].float(), 1, generator=g).squeeze(1)
    if texture is None:
        texture = torch.multinomial(torch.tensor([0.4, 0.15, 0.15, 0.15, 0.15]), n, replacement=True, generator=g)
    return W.Scene(obj=obj, colour=colour, bg=bg, texture=texture, look=torch.zeros(n, dtype=torch.int64))


def _balanced_labels(k: int, per_class: int, g: torch.Generator) -> torch.Tensor:
    labels = torch.arange(k).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=g)]


def _generated(
    name: str,
    classnames: list[str],
    make_scene: Callable[[torch.Tensor, torch.Generator], W.Scene],
    sizes: tuple[int, int, int],
    seed: int,
) -> DatasetSplits:
    splits = {}
    for split, per_class in zip(("train", "val", "test"), sizes):
        g = _generator(name, seed, split)
        labels = _balanced_labels(len(classnames), per_class, g)
        scene = make_scene(labels, g)
        pool = "test" if split == "test" else "downstream"
        images = W.to_uint8_hwc(W.render(scene, pool, g, W.DOWNSTREAM_STYLE))
        splits[split] = ArrayImages(images, labels.numpy())
    return DatasetSplits(
        name=name,
        classnames=list(classnames),
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        templates=list(TEMPLATES),
    )


@DATASETS.register("pocket_garments")
def pocket_garments(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Pocket world: 10 garment types in random colours on random backgrounds."""
    return _generated("pocket_garments", W.GARMENTS, lambda y, g: _scene(y, g, obj=y), SIZES_10, seed)


@DATASETS.register("pocket_digits")
def pocket_digits(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Pocket world: 10 handwritten digits in random colours on random backgrounds."""
    return _generated("pocket_digits", W.DIGITS, lambda y, g: _scene(y, g, obj=y + 10), SIZES_10, seed)


@DATASETS.register("pocket_colours")
def pocket_colours(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Pocket world: the colour of the object (8 colours)."""

    def scene(y: torch.Tensor, g: torch.Generator) -> W.Scene:
        obj = torch.randint(0, len(W.OBJECTS), (len(y),), generator=g)
        # redraw objects that would make a held-out combination with the label colour
        for _ in range(20):
            bad = W.HELD_MATRIX[y, obj]
            if not bad.any():
                break
            obj = torch.where(bad, torch.randint(0, len(W.OBJECTS), (len(y),), generator=g), obj)
        return _scene(y, g, obj=obj, colour=y)

    return _generated("pocket_colours", COLOUR_CLASSNAMES, scene, SIZES_10, seed)


@DATASETS.register("pocket_textures")
def pocket_textures(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Pocket world: the background texture (plain, striped, dotted, checkered, noisy)."""
    return _generated("pocket_textures", TEXTURE_CLASSNAMES, lambda y, g: _scene(y, g, texture=y), SIZES_10, seed)


@DATASETS.register("pocket_colour_garment")
def pocket_colour_garment(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Pocket world: 80 colour x garment classes ("red t-shirt" ...), held-out combinations included."""
    cg = torch.tensor([[W.COLOUR_NAMES.index(c), W.GARMENTS.index(o)] for c, o in COLOUR_GARMENT])

    def scene(y: torch.Tensor, g: torch.Generator) -> W.Scene:
        return _scene(y, g, obj=cg[y, 1], colour=cg[y, 0], allow_held_out=True)

    return _generated("pocket_colour_garment", COLOUR_GARMENT_CLASSNAMES, scene, SIZES_MANY, seed)


@DATASETS.register("pocket_compositional")
def pocket_compositional(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Pocket world: only the 20 colour x object combinations never seen in pretraining."""
    co = torch.tensor([[W.COLOUR_NAMES.index(c), W.OBJECTS.index(o)] for c, o in W.HELD_OUT])

    def scene(y: torch.Tensor, g: torch.Generator) -> W.Scene:
        return _scene(y, g, obj=co[y, 1], colour=co[y, 0], allow_held_out=True)

    return _generated("pocket_compositional", COMPOSITIONAL_CLASSNAMES, scene, (16, 4, 50), seed)


def _grey_to_rgb32(images: np.ndarray) -> np.ndarray:
    """Real 28x28 grayscale images -> uint8 RGB 32x32 (bicubic, as open_clip's resize does)."""
    out = np.empty((len(images), W.IMAGE_SIZE, W.IMAGE_SIZE, 3), dtype=np.uint8)
    for i, a in enumerate(images):
        out[i] = np.asarray(
            Image.fromarray(a, mode="L").resize((W.IMAGE_SIZE, W.IMAGE_SIZE), Image.BICUBIC).convert("RGB")
        )
    return out


def _per_class(
    labels: np.ndarray, k: int, per_class: int, rng: np.random.Generator, exclude: np.ndarray | None = None
) -> np.ndarray:
    idx = []
    for c in range(k):
        cand = np.flatnonzero(labels == c)
        if exclude is not None:
            cand = np.setdiff1d(cand, exclude)
        idx.append(rng.choice(cand, size=min(per_class, len(cand)), replace=False))
    return np.sort(np.concatenate(idx))


def _real(
    name: str,
    classnames: list[str],
    pools: dict[str, tuple[np.ndarray, np.ndarray]],
    sizes: tuple[int, int, int],
    seed: int,
) -> DatasetSplits:
    rng = np.random.default_rng(zlib.crc32(f"{name}/{seed}".encode()))
    tx, ty = pools["train"]
    tr = _per_class(ty, len(classnames), sizes[0], rng)
    va = _per_class(ty, len(classnames), sizes[1], rng, exclude=tr)
    ex, ey = pools["test"]
    te = _per_class(ey, len(classnames), sizes[2], rng)
    mk = lambda x, y, i: ArrayImages(_grey_to_rgb32(x[i]), y[i])  # noqa: E731
    return DatasetSplits(
        name=name,
        classnames=list(classnames),
        train=mk(tx, ty, tr),
        val=mk(tx, ty, va),
        test=mk(ex, ey, te),
        templates=list(TEMPLATES),
    )


@DATASETS.register("pocket_fmnist_real")
def pocket_fmnist_real(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Real grayscale Fashion-MNIST: test from the test split, train/val from train images unused in pretraining."""
    gx, gy = W.fashion_mnist("train")
    ex, ey = W.fashion_mnist("test")
    s = slice(W.FMNIST_PRETRAIN, None)
    return _real("pocket_fmnist_real", W.GARMENTS, {"train": (gx[s], gy[s]), "test": (ex, ey)}, SIZES_10, seed)


@DATASETS.register("pocket_mnist_real")
def pocket_mnist_real(root: str | None = None, seed: int = 0, **kw) -> DatasetSplits:
    """Real grayscale MNIST digits never used in pretraining (train/val: 50 per class, test: 100 per class)."""
    x, y, rank = W.mnist_digits()
    tr = (rank >= 350) & (rank < 400)
    te = rank >= 400
    return _real("pocket_mnist_real", W.DIGITS, {"train": (x[tr], y[tr]), "test": (x[te], y[te])}, (40, 10, 100), seed)


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
        for name in (names or SUITE)
    }


def main(argv: list[str] | None = None) -> None:
    import argparse

    from ncprompt.pocket.model import create_pocket

    ap = argparse.ArgumentParser(description="Zero-shot accuracy of the pocket model on the pocket suite.")
    ap.add_argument("--weights", default=None, help="safetensors file (default: the committed weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--template", action="append", help="prompt template(s), default: each dataset's first")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, preprocess, tokenizer = create_pocket(weights=a.weights)
    templates = a.template or [None]
    head = " | ".join(t or "a photo of a {}." for t in templates)
    print(f"| dataset | classes | chance | {head} |\n|---|---|---|" + "---|" * len(templates))
    for name in SUITE:
        data = DATASETS.get(name)(seed=a.seed)
        accs = [
            zero_shot_accuracy(model, tokenizer, preprocess, data, max_images=a.max_images, template=t)
            for t in templates
        ]
        k = data.num_classes
        print(f"| {name} | {k} | {100 / k:.1f}% | " + " | ".join(f"{100 * x:.1f}%" for x in accs) + " |")


if __name__ == "__main__":
    main()
