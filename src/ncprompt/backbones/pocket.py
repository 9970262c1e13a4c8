"""The project's own small CLIP ("pocket"): an open_clip ``local-dir:`` folder shipped in the package.

``load_backbone("pocket")`` is ``load_backbone("local-dir:<package>/pocket/weights")``: open_clip
builds the model from the folder's ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg":
...}``) and loads its one ``.safetensors`` file; nothing is registered in open_clip's tables.
The folder is found by path (no import of ``ncprompt.pocket``, which sits above the backbones).
"""

from __future__ import annotations

from pathlib import Path

from ncprompt.backbones.openclip import EXTRA_BACKBONES

#: the folder the pocket model is shipped in (open_clip_config.json + one .safetensors)
POCKET_FOLDER = Path(__file__).resolve().parent.parent / "pocket" / "weights"
#: bench 3's pocket model: the same architecture pretrained on bench 3's pretraining artworks only
POCKET_B3_FOLDER = POCKET_FOLDER.parent / "weights_b3"


@EXTRA_BACKBONES.register("pocket", help="the project's small pretrained CLIP (32x32 images), weights shipped")
def pocket_folder() -> Path:
    """The pocket model's open_clip ``local-dir:`` folder."""
    return POCKET_FOLDER


@EXTRA_BACKBONES.register("pocket-b3", help="the small CLIP of pocket bench 3: pretrained without any of the "
                          "b3_ sets' training, validation or test artworks, weights shipped")
def pocket_b3_folder() -> Path:
    """Bench 3's pocket model's open_clip ``local-dir:`` folder."""
    return POCKET_B3_FOLDER


def pocket_backbone() -> Path | None:
    """The shipped pocket weights file (the folder's one .safetensors), or None when absent."""
    files = sorted(POCKET_FOLDER.glob("*.safetensors")) if POCKET_FOLDER.is_dir() else []
    return files[0] if len(files) == 1 and (POCKET_FOLDER / "open_clip_config.json").is_file() else None
