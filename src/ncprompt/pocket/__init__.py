"""The pocket world and model: a small open_clip CLIP pretrained here on generated image-caption pairs."""

from ncprompt.pocket.model import (
    POCKET_NAME,
    POCKET_PREPROCESS,
    POCKET_WEIGHTS,
    create_pocket,
    register_pocket,
)

__all__ = ["POCKET_NAME", "POCKET_PREPROCESS", "POCKET_WEIGHTS", "create_pocket", "register_pocket"]
