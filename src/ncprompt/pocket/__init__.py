"""The pocket world and model: a small open_clip CLIP pretrained here on emoji artwork with real names."""

from ncprompt.pocket.model import (
    POCKET_NAME,
    POCKET_PREPROCESS,
    POCKET_WEIGHTS,
    create_pocket,
    register_pocket,
)

__all__ = ["POCKET_NAME", "POCKET_PREPROCESS", "POCKET_WEIGHTS", "create_pocket", "register_pocket"]
