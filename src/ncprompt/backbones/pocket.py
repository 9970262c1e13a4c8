"""The project's own small CLIP ("pocket"), an open_clip config plus shipped weights."""

from __future__ import annotations

from pathlib import Path

from ncprompt.backbones.openclip import EXTRA_BACKBONES


@EXTRA_BACKBONES.register("pocket", help="the project's small pretrained CLIP (32x32 images), weights shipped")
def pocket_backbone() -> Path | None:
    """Registers the pocket config with open_clip; returns the shipped weights file (None if absent)."""
    from ncprompt.pocket.model import POCKET_WEIGHTS, register_pocket

    register_pocket()
    return POCKET_WEIGHTS if POCKET_WEIGHTS.is_file() else None
