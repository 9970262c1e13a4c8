"""The pocket model: a small open_clip ``CLIP`` built from the project's own model config.

There is no model code here: ``pocket.json`` (next to this file) is an ordinary open_clip model
config, registered with :func:`open_clip.add_model_config`, so after :func:`register_pocket`

>>> model = open_clip.create_model("pocket")                                   # random init
>>> model = open_clip.create_model("pocket", pretrained=str(POCKET_WEIGHTS))   # the shipped weights
>>> tokenizer = open_clip.get_tokenizer("pocket")                              # context 32

build exactly the classes and code paths a real open_clip CLIP uses.  The shipped folder
``weights/`` (``open_clip_config.json`` = model config + preprocess config, and
``pocket.safetensors``) is an open_clip ``local-dir:`` model:
``open_clip.create_model_and_transforms("local-dir:<weights dir>")``, which is how
``ncprompt``'s backbone loader reads it.  Nothing is written into open_clip's pretrained table.
The preprocessing: image size 32 from ``vision_cfg`` and open_clip's default (OpenAI) mean/std,
which pretraining uses too.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

POCKET_NAME = "pocket"
POCKET_DIR = Path(__file__).resolve().parent
POCKET_CONFIG = POCKET_DIR / "pocket.json"
POCKET_WEIGHTS_DIR = POCKET_DIR / "weights"
POCKET_WEIGHTS = POCKET_WEIGHTS_DIR / "pocket.safetensors"
POCKET_OPEN_CLIP_CONFIG = POCKET_WEIGHTS_DIR / "open_clip_config.json"
POCKET_PREPROCESS = {
    "size": 32,
    "mean": list(OPENAI_DATASET_MEAN),
    "std": list(OPENAI_DATASET_STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
"""Image preprocessing of the pocket model (what ``open_clip`` derives from its config)."""


def pocket_model_config() -> dict:
    """The open_clip model config (``pocket.json``) as a dict."""
    return json.loads(POCKET_CONFIG.read_text())


def register_pocket() -> None:
    """Register the pocket model config with open_clip (idempotent)."""
    if POCKET_NAME not in open_clip.list_models():
        open_clip.add_model_config(POCKET_CONFIG)


def create_pocket(pretrained: bool = True, device: str | torch.device = "cpu", weights: str | Path | None = None):
    """``(model, preprocess, tokenizer)`` of the pocket model, in eval mode.

    ``pretrained=False`` gives a random init; ``weights`` overrides the committed weights file.
    """
    register_pocket()
    path = Path(weights) if weights is not None else POCKET_WEIGHTS
    if pretrained and not path.is_file():
        raise FileNotFoundError(
            f"pocket weights {path} not found; train them with `python -m ncprompt.pocket.pretrain` and copy "
            f"runs/pocket-pretrain/pocket.safetensors there"
        )
    model, _, preprocess = open_clip.create_model_and_transforms(
        POCKET_NAME, pretrained=str(path) if pretrained else None, device=device
    )
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(POCKET_NAME)


def save_state_dict_fp16(model: torch.nn.Module, path: str | Path) -> None:
    """Save ``model.state_dict()`` as fp16 safetensors, atomically (``utils.save_safetensors``)."""
    from ncprompt.utils import save_safetensors

    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_safetensors(path, sd, metadata={"format": "pt", "model": POCKET_NAME})
