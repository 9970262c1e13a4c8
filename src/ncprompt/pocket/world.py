"""The pocket world: seeded, vectorised image-caption pairs made of real emoji artwork.

Images are one emoji (:mod:`ncprompt.pocket.emoji`: ~1,900 concepts drawn by up to six artists)
pasted on a random background (plain palette colour, two-colour gradient, low-frequency noise or
stripes) at a random scale, position and mild rotation (sprites: the 64 px art averaged down to
32 px in premultiplied colour and alpha, then warped and composited at 32x32).  Captions imitate
alt-text: a concept is *named* (its label or a synonym, in one of many frames) with a per-concept
probability that falls along a long tail from 0.9 to 0.04, otherwise it is described by 1-3 of
its keywords or by its subgroup / group words; background-colour, size and style words are added
now and then.  Every caption is a set of constraints (name, tags, subgroup,
group, background colour, style), so "caption j is true of image i" is known exactly
(:meth:`Batch.consistency`), which the multi-positive contrastive loss uses.

Artists are mixed with unequal weights (:data:`PRETRAIN_MIX`); the Symbola glyphs never occur in
pretraining and the OpenMoji line art only rarely: they are the domain-shift targets.  The suite's
hand-written prompt "{} emoji" is one of the caption frames (as "a photo of a {}." is a frame of web
alt-text); under 1% of the named captions say "a photo of", so that prompt scores lower here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ncprompt.pocket import emoji as E

IMAGE_SIZE = 32
SPRITE_POOL = E.SPRITE // IMAGE_SIZE
ARTIST = {a: i for i, a in enumerate(E.ARTISTS)}
PRETRAIN_MIX = {"google": 0.33, "twitter": 0.33, "openmoji": 0.18, "fluent": 0.14, "lineart": 0.02, "symbola": 0.0}
"""Artist weights in pretraining (renormalised over the artists that drew the concept)."""
HELD_OUT_ARTISTS = ("symbola",)
"""Artists never seen in pretraining."""
INK_ARTISTS = ("lineart", "symbola", "fluent_hc")
"""Black-ink artists: drawn on light backgrounds."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 215, 50),
    "green": (50, 160, 70),
    "blue": (45, 90, 210),
    "purple": (130, 60, 180),
    "pink": (240, 140, 190),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
    "brown": (120, 75, 40),
}
COLOUR_NAMES = list(PALETTE)
_RGB = torch.tensor([PALETTE[c] for c in COLOUR_NAMES], dtype=torch.float32) / 255.0
NONE = -1


# --------------------------------------------------------------------------------------------
# catalogue as tensors


@dataclass
class Catalogue:
    """Concepts with their tag incidence, subgroup / group ids and sprites as a float tensor."""

    concepts: list[E.Concept]
    sprites: torch.Tensor  # (C, A, 4, 32, 32) float (or uint8, x 255): premultiplied RGB and alpha
    has: torch.Tensor  # (C, A) bool: the artist drew the concept
    tags: list[str]
    tag_matrix: torch.Tensor  # (C, T) float 0/1
    subgroups: list[str]
    subgroup: torch.Tensor  # (C,)
    groups: list[str]
    group: torch.Tensor  # (C,)
    name_prob: torch.Tensor  # (C,) probability that a caption names the concept
    artists: tuple[str, ...] = E.ARTISTS  # the artist axis of ``sprites`` / ``has``

    def artist_ids(self, names) -> torch.Tensor:
        """Indices of those of ``names`` that are on this catalogue's artist axis."""
        return torch.tensor([self.artists.index(a) for a in names if a in self.artists], dtype=torch.long)

    def index(self, key: str) -> int:
        return self._keys[key]

    def __post_init__(self) -> None:
        self._keys = {c.key: i for i, c in enumerate(self.concepts)}


def naming_probability(n: int, seed: int = 1234, hi: float = 0.9, lo: float = 0.04) -> torch.Tensor:
    """Per-concept naming probability: log-linear from ``hi`` to ``lo`` over a seeded ranking."""
    rank = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    p = torch.empty(n)
    p[rank] = hi * (lo / hi) ** (torch.arange(n, dtype=torch.float32) / max(1, n - 1))
    return p


def downsample(arr: np.ndarray) -> torch.Tensor:
    """``(C, A, 64, 64, 4)`` uint8 RGBA -> ``(C, A, 4, 32, 32)`` float: premultiplied at 64 px, then
    averaged down (antialiased)."""
    raw = torch.from_numpy(np.array(arr)).permute(0, 1, 4, 2, 3)  # (C, A, 4, 64, 64) uint8
    sprites = torch.empty(raw.shape[0], raw.shape[1], 4, IMAGE_SIZE, IMAGE_SIZE)
    for i in range(0, raw.shape[0], 256):
        x = raw[i : i + 256].float().div_(255.0).flatten(0, 1)
        x = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)
        sprites[i : i + 256] = F.avg_pool2d(x, SPRITE_POOL).view(-1, raw.shape[1], 4, IMAGE_SIZE, IMAGE_SIZE)
    return sprites


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The catalogue (loaded once per process)."""
    concepts, arr = E.load()
    return build_catalogue(concepts, downsample(arr))


def build_catalogue(
    concepts: list[E.Concept], sprites: torch.Tensor, artists: tuple[str, ...] = E.ARTISTS
) -> Catalogue:
    """A catalogue of ``concepts`` with 32 px premultiplied ``sprites`` ``(C, A, 4, 32, 32)`` on the axis
    ``artists``; an artist drew a concept where its sprite has any alpha."""
    has = sprites[:, :, 3].flatten(2).amax(2) > 0
    tags = sorted({t for c in concepts for t in c.tags})
    ti = {t: i for i, t in enumerate(tags)}
    tm = torch.zeros(len(concepts), len(tags))
    for i, c in enumerate(concepts):
        for t in c.tags:
            tm[i, ti[t]] = 1.0
    subgroups = sorted({c.subgroup for c in concepts})
    groups = sorted({c.group for c in concepts})
    return Catalogue(
        concepts=concepts,
        sprites=sprites,
        has=has,
        tags=tags,
        tag_matrix=tm,
        subgroups=subgroups,
        subgroup=torch.tensor([subgroups.index(c.subgroup) for c in concepts]),
        groups=groups,
        group=torch.tensor([groups.index(c.group) for c in concepts]),
        name_prob=naming_probability(len(concepts)),
        artists=tuple(artists),
    )


# --------------------------------------------------------------------------------------------
# rendering


@dataclass(frozen=True)
class RenderStyle:
    """How a set of images is rendered; pretraining, the suite and its V2 variant differ on purpose."""

    scale: tuple[float, float] = (0.5, 1.0)  # sprite side / canvas side
    rotation: float = 15.0  # max degrees either way
    backgrounds: tuple[float, float, float, float] = (0.5, 0.25, 0.15, 0.10)  # plain, gradient, noise, stripes
    noise_std: float = 0.0
    blur: float = 0.0  # probability of a light blur


PRETRAIN_RENDER = RenderStyle(scale=(0.55, 1.0), rotation=10.0, backgrounds=(0.55, 0.2, 0.15, 0.10))
SUITE_RENDER = RenderStyle(
    scale=(0.45, 0.95), rotation=20.0, backgrounds=(0.35, 0.3, 0.2, 0.15), noise_std=0.02, blur=0.2
)
V2_RENDER = RenderStyle(
    scale=(0.35, 0.75), rotation=35.0, backgrounds=(0.2, 0.3, 0.25, 0.25), noise_std=0.04, blur=0.35
)


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _backgrounds(
    n: int, g: torch.Generator, style: RenderStyle, light: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,3,32,32)`` backgrounds and the palette colour named by each plain one (-1 otherwise)."""
    s = IMAGE_SIZE
    kind = torch.multinomial(torch.tensor(style.backgrounds), n, replacement=True, generator=g)
    named = torch.randint(0, len(COLOUR_NAMES), (n,), generator=g)
    c1 = (_RGB[named] + (torch.rand(n, 3, generator=g) * 2 - 1) * 0.05).clamp(0, 1)
    c2 = torch.rand(n, 3, generator=g)
    c3 = torch.rand(n, 3, generator=g)
    ramp = torch.linspace(0, 1, s)
    horiz = torch.rand(n, generator=g) < 0.5
    t = torch.where(horiz.view(n, 1, 1), ramp.view(1, 1, s).expand(n, s, s), ramp.view(1, s, 1).expand(n, s, s))
    grad = c2.view(n, 3, 1, 1) * (1 - t.unsqueeze(1)) + c3.view(n, 3, 1, 1) * t.unsqueeze(1)
    low = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(s, s), mode="bilinear", align_corners=False)
    noise = (c2.view(n, 3, 1, 1) * 0.6 + low * 0.4).clamp(0, 1)
    period = torch.randint(3, 9, (n,), generator=g).float().view(n, 1, 1)
    xx = torch.arange(s, dtype=torch.float32).view(1, 1, s) + torch.zeros(n, s, 1)
    yy = torch.arange(s, dtype=torch.float32).view(1, s, 1) + torch.zeros(n, 1, s)
    diag = torch.rand(n, generator=g) < 0.5
    proj = torch.where(diag.view(n, 1, 1), xx + yy, torch.where(horiz.view(n, 1, 1), xx, yy))
    band = (torch.remainder(proj, period) < period / 2).float().unsqueeze(1)
    stripes = c2.view(n, 3, 1, 1) * band + c3.view(n, 3, 1, 1) * (1 - band)
    k = kind.view(n, 1, 1, 1)
    plain = c1.view(n, 3, 1, 1).expand(n, 3, s, s)
    bg = torch.where(k == 0, plain, torch.where(k == 1, grad, torch.where(k == 2, noise, stripes)))
    lift = light.view(n, 1, 1, 1)
    bg = torch.where(lift, 0.55 + 0.45 * bg, bg)
    name = torch.where((kind == 0) & ~light, named, torch.full_like(named, NONE))
    return bg, name


def render(
    concept: torch.Tensor,
    artist: torch.Tensor,
    g: torch.Generator,
    style: RenderStyle = PRETRAIN_RENDER,
    cat: Catalogue | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images (B,3,32,32) in [0,1] quantised to 1/255, named background colour (B,), scale (B,))``;
    ``cat``: the catalogue (default :func:`catalogue`)."""
    cat = cat or catalogue()
    n = len(concept)
    spr = cat.sprites[concept, artist]  # (B,4,32,32) premultiplied
    if not spr.is_floating_point():  # bench 3 keeps its sprites as uint8
        spr = spr.float() / 255.0
    scale = _u(g, n, *style.scale)
    ang = _u(g, n, -style.rotation, style.rotation) * math.pi / 180
    tx = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    ty = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, -(cos * tx - sin * ty)], 1),
            torch.stack([sin, cos, -(sin * tx + cos * ty)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, (n, 4, IMAGE_SIZE, IMAGE_SIZE), align_corners=False)
    warped = F.grid_sample(spr, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ink = torch.isin(artist, cat.artist_ids(INK_ARTISTS))
    bg, bg_name = _backgrounds(n, g, style, ink)
    img = warped[:, :3] + bg * (1 - warped[:, 3:])
    if style.blur > 0:
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        blurred = F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3).repeat(3, 1, 1, 1), groups=3)
        do = (torch.rand(n, generator=g) < style.blur).view(n, 1, 1, 1)
        img = torch.where(do, blurred, img)
    if style.noise_std > 0:
        img = img + torch.randn(img.shape, generator=g) * style.noise_std
    return img.clamp(0, 1).mul(255).round().div(255), bg_name, scale


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """``(B,3,H,W)`` float in [0,1] -> ``(B,H,W,3)`` uint8."""
    return images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# --------------------------------------------------------------------------------------------
# captions

NAME_FRAMES = [
    ("{}", 4.0),
    ("{} emoji", 4.0),
    ("{} icon", 2.0),
    ("emoji {}", 1.0),
    ("an emoji of {}", 1.0),
    ("{} clipart", 1.0),
    ("{} sticker", 1.0),
    ("{} illustration", 1.0),
    ("cute {} emoji", 0.7),
    ("{} vector icon", 0.7),
    ("{} cartoon", 0.7),
    ("{} symbol", 0.5),
    ("emoticon: {}", 0.5),
    ("the {} emoji", 1.0),
    ("image of {}", 0.6),
    ("a photo of {}", 0.15),
]
_FRAME_W = torch.tensor([w for _, w in NAME_FRAMES])
STYLE_WORDS = {
    "fluent": ["3d", "3d render of", "glossy 3d"],
    "lineart": ["line drawing of", "outline", "black and white outline of"],
}
STYLE_IDS = {a: i for i, a in enumerate(STYLE_WORDS)}
SIZE_WORDS = {0: ["small", "tiny", "little"], 1: ["big", "large"]}


@dataclass
class CaptionSpec:
    """What each caption asserts (``-1``: nothing); ``tags`` is a (B, T) multi-hot matrix."""

    name: torch.Tensor
    tags: torch.Tensor
    subgroup: torch.Tensor
    group: torch.Tensor
    bg: torch.Tensor
    style: torch.Tensor


def _pick(items, k: int):
    return items[k % len(items)]


def _style_of(artist: torch.Tensor, cat: Catalogue) -> torch.Tensor:
    """The style id each image's artist is named by in captions (:data:`STYLE_WORDS`), -1 for none."""
    style_of = torch.full_like(artist, NONE)
    for a, sid in STYLE_IDS.items():
        if a in cat.artists:
            style_of = torch.where(artist == cat.artists.index(a), torch.tensor(sid), style_of)
    return style_of


def sample_captions(
    concept: torch.Tensor,
    artist: torch.Tensor,
    bg_name: torch.Tensor,
    scale: torch.Tensor,
    g: torch.Generator,
    cat: Catalogue | None = None,
) -> tuple[list[str], CaptionSpec]:
    """One alt-text-like caption per image and what it asserts."""
    cat = cat or catalogue()
    n = len(concept)
    r = torch.rand(n, 8, generator=g)
    named = r[:, 0] < cat.name_prob[concept]
    use_syn = r[:, 1] < 0.3
    add_tags = named & (r[:, 2] < 0.25)
    # unnamed: 0 tags, 1 subgroup words (+ tags), 2 group words
    how = torch.multinomial(torch.tensor([0.65, 0.25, 0.10]), n, replacement=True, generator=g)
    say_sub = (named & (r[:, 3] < 0.1)) | (~named & (how == 1))
    say_group = ~named & (how == 2)
    say_bg = (bg_name != NONE) & (r[:, 4] < 0.3)
    style_of = _style_of(artist, cat)
    say_style = (style_of != NONE) & (r[:, 5] < 0.5)
    say_size = (r[:, 6] < 0.1) & ((scale < 0.6) | (scale > 0.9))
    frame = torch.multinomial(_FRAME_W, n, replacement=True, generator=g)
    ntags = torch.randint(1, 4, (n,), generator=g)
    ks = torch.randint(0, 1 << 20, (n, 6), generator=g).tolist()
    tag_mh = torch.zeros(n, len(cat.tags))
    tag_index = {t: i for i, t in enumerate(cat.tags)}
    caps = []
    lists = [
        x.tolist()
        for x in (
            concept,
            named,
            use_syn,
            add_tags,
            say_sub,
            say_group,
            say_bg,
            say_style,
            say_size,
            frame,
            ntags,
            bg_name,
            style_of,
            scale < 0.6,
        )
    ]
    for i in range(n):
        c, nm, syn, at, ss, sg, sb, sst, ssz, fr, nt, bgn, sty, small = (x[i] for x in lists)
        con = cat.concepts[c]
        k = ks[i]
        want_tags = (at or (not nm and not ss and not sg) or (ss and k[5] % 2 == 0)) and con.tags
        tags: list[str] = []
        if want_tags:
            order = [con.tags[(k[0] + j * 7919) % len(con.tags)] for j in range(len(con.tags))]
            tags = list(dict.fromkeys(order))[: nt if not nm else min(nt, 2)]
            for t in tags:
                tag_mh[i, tag_index[t]] = 1.0
        if nm:
            name = _pick(con.synonyms, k[1]) if syn and con.synonyms else con.label
            body = NAME_FRAMES[fr][0].format(name)
        elif ss:
            body = con.subgroup
        elif sg:
            body = con.group
        else:
            body = ""
        if tags:
            tag_text = ", ".join(tags) if k[2] % 2 else " ".join(tags)
            body = f"{body}, {tag_text}" if body else tag_text
        if not body:  # a concept without tags: fall back to its subgroup
            body = con.subgroup
            ss = True
            say_sub[i] = True
        if ss and nm:
            body = f"{body}, {con.subgroup}"
        if sst:
            body = f"{_pick(STYLE_WORDS[list(STYLE_WORDS)[sty]], k[3])} {body}"
        if ssz:
            body = f"{_pick(SIZE_WORDS[0 if small else 1], k[4])} {body}"
        if sb:
            body = f"{body} on a {COLOUR_NAMES[bgn]} background"
        caps.append(body)
    spec = CaptionSpec(
        name=torch.where(named, concept, NONE),
        tags=tag_mh,
        subgroup=torch.where(say_sub, cat.subgroup[concept], NONE),
        group=torch.where(say_group, cat.group[concept], NONE),
        bg=torch.where(say_bg, bg_name, NONE),
        style=torch.where(say_style, style_of, NONE),
    )
    return caps, spec


def consistency(
    concept: torch.Tensor, artist: torch.Tensor, bg_name: torch.Tensor, spec: CaptionSpec, cat: Catalogue | None = None
) -> torch.Tensor:
    """``M[i, j]``: caption j is true of image i (every constraint it states holds)."""
    cat = cat or catalogue()

    def ok(img_attr: torch.Tensor, cap_attr: torch.Tensor) -> torch.Tensor:
        return (cap_attr.view(1, -1) == NONE) | (cap_attr.view(1, -1) == img_attr.view(-1, 1))

    style_of = _style_of(artist, cat)
    tag_hits = cat.tag_matrix[concept] @ spec.tags.t()  # (B_img, B_cap): how many of the caption's tags hold
    tags_ok = tag_hits >= spec.tags.sum(1).view(1, -1) - 0.5
    return (
        ok(concept, spec.name)
        & tags_ok
        & ok(cat.subgroup[concept], spec.subgroup)
        & ok(cat.group[concept], spec.group)
        & ok(bg_name, spec.bg)
        & ok(style_of, spec.style)
    )


# --------------------------------------------------------------------------------------------
# pretraining stream


@dataclass
class Batch:
    images: torch.Tensor  # (B,3,32,32) float in [0,1]
    captions: list[str]
    concept: torch.Tensor
    artist: torch.Tensor
    bg_name: torch.Tensor
    spec: CaptionSpec
    cat: Catalogue | None = None

    def consistency(self) -> torch.Tensor:
        return consistency(self.concept, self.artist, self.bg_name, self.spec, self.cat)


def sample_artists(
    concept: torch.Tensor, mix: dict[str, float], g: torch.Generator, cat: Catalogue | None = None
) -> torch.Tensor:
    """One artist per image, drawn from ``mix`` among the artists that drew the concept."""
    cat = cat or catalogue()
    w = torch.tensor([mix.get(a, 0.0) for a in cat.artists]).expand(len(concept), -1) * cat.has[concept]
    bad = w.sum(1) <= 0
    if bad.any():
        raise ValueError(f"concepts {concept[bad].tolist()[:5]} have no artwork by the artists of {mix}")
    return torch.multinomial(w, 1, generator=g).squeeze(1)


class PretrainWorld:
    """Endless seeded stream of pretraining batches (deterministic given seed and call order).

    ``concepts`` restricts the concepts (default: all); ``mix`` the artist weights; ``cat`` the
    catalogue (default :func:`catalogue`; bench 3 passes one holding only its pretraining artworks)."""

    def __init__(
        self,
        seed: int = 0,
        mix: dict[str, float] | None = None,
        concepts: torch.Tensor | None = None,
        cat: Catalogue | None = None,
    ):
        self.g = torch.Generator().manual_seed(seed)
        self.mix = dict(PRETRAIN_MIX if mix is None else mix)
        for a in HELD_OUT_ARTISTS:
            if self.mix.get(a, 0.0) > 0:
                raise ValueError(f"artist {a!r} is held out of pretraining")
        self.cat = cat or catalogue()
        self.concepts = torch.arange(len(self.cat.concepts)) if concepts is None else concepts

    def batch(self, n: int) -> Batch:
        cat = self.cat
        concept = self.concepts[torch.randint(0, len(self.concepts), (n,), generator=self.g)]
        artist = sample_artists(concept, self.mix, self.g, cat)
        images, bg_name, scale = render(concept, artist, self.g, PRETRAIN_RENDER, cat)
        caps, spec = sample_captions(concept, artist, bg_name, scale, self.g, cat)
        return Batch(images, caps, concept, artist, bg_name, spec, cat)
