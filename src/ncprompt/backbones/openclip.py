"""open_clip backbones: any architecture by name, weights by pretrained tag or local file.

The model is *read*, never copied: :class:`Backbone` holds the open_clip model, its tokenizer and
transforms, and every later module calls the model's own sub-modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from ncprompt.registry import Registry

# Extra backbones shipped by the project (e.g. "pocket"); each entry registers its open_clip
# config and returns the default weights file for ``pretrained=None | "default"``.
EXTRA_BACKBONES: Registry[Any] = Registry("backbone")

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class BackboneError(ValueError):
    """A backbone cannot be built or its weights cannot be loaded; the message says how to fix it."""


@dataclass
class Backbone:
    """A frozen open_clip model with everything needed around it.

    Attributes:
        model: the open_clip ``CLIP`` (eval mode, ``requires_grad_(False)``).
        name: architecture name; ``pretrained``: tag, file path or ``None`` (random weights).
        weights_id: a string identifying the weights (tag, or file path + content hash), for caching.
        embed_dim: joint embedding dim; ``text_width``: token-embedding width.
        precision: "fp32", "bf16" or "fp16" (autocast dtype on GPU; CPU runs fp32 unless asked).
    """

    model: nn.Module
    name: str
    pretrained: str | None
    weights_id: str
    tokenizer: Any
    train_transform: Any
    eval_transform: Any
    device: torch.device
    precision: str = "fp32"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        proj = self.model.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else int(proj.shape[1])

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

    @property
    def logit_scale(self) -> float:
        """CLIP's frozen temperature s = exp(logit_scale)."""
        return float(self.model.logit_scale.detach().exp().item())

    @property
    def random_weights(self) -> bool:
        return self.pretrained is None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the chosen precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) image features, float32."""
        with self.autocast():
            return self.model.encode_image(images.to(self.device)).float()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Raw (un-normalised) text features of whole sentences, float32 (open_clip's own path)."""
        with self.autocast():
            return self.model.encode_text(self.tokenize(texts)).float()


def augmentation_transform(pp: Any, scale: tuple[float, float] = (0.5, 1.0), flip: bool = True) -> Any:
    """CoOp's training views: random resized crop + horizontal flip, then the model's normalisation."""
    from torchvision import transforms as T

    size = pp.size if isinstance(pp.size, int) else pp.size[0]
    ops: list[Any] = [
        T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
    ]
    if flip:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(mean=pp.mean, std=pp.std)]
    return T.Compose(ops)


def list_backbones() -> list[str]:
    """Every architecture open_clip can build, plus the project's own."""
    for name in EXTRA_BACKBONES:
        EXTRA_BACKBONES.get(name)()  # registers its config with open_clip
    return sorted(set(open_clip.list_models()) | set(EXTRA_BACKBONES.names()))


def _file_id(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"file:{path.name}:{h.hexdigest()[:16]}"


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a .pt/.bin file without unpickling arbitrary objects.

    Accepts open_clip state dicts, ``{"state_dict": ...}`` training checkpoints (``module.``
    prefixes stripped) and OpenAI TorchScript archives (their tensors are read through
    ``torch.jit.load``, which runs no pickled Python code).
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path), device="cpu")
    elif _is_torchscript(path):
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        for key in ("input_resolution", "context_length", "vocab_size"):
            sd.pop(key, None)
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - report any unpickling refusal clearly
            raise BackboneError(
                f"cannot read checkpoint {path}: {e}. Only tensor state dicts are read (weights_only=True); "
                "re-save it with torch.save(model.state_dict(), ...) or as .safetensors"
            ) from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise BackboneError(f"checkpoint {path} holds no state dict")
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _load_file_weights(model: nn.Module, name: str, path: Path) -> None:
    from open_clip.factory import convert_state_dict

    sd = read_state_dict(path)
    sd = convert_state_dict(model, sd)
    if "logit_scale" in sd and model.logit_scale.ndim != sd["logit_scale"].ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
            )
        raise BackboneError(
            f"checkpoint {path} does not match architecture {name!r}: " + "; ".join(details)
            + ". Pass the --model this checkpoint was trained with (see `ncprompt models`)."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_backbone(
    name: str,
    pretrained: str | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
) -> Backbone:
    """Build an open_clip model by architecture ``name`` and load its weights.

    Args:
        name: any ``open_clip.list_models()`` name, or a project backbone such as ``"pocket"``.
        pretrained: an open_clip pretrained tag (downloaded where the network allows), a local
            checkpoint file (.pt/.pth/.bin/.safetensors; open_clip or OpenAI format), ``"default"``
            for a project backbone's shipped weights, or ``None`` for random weights.
        device: "cpu", "cuda", ... (default: cuda when available).
        precision: "fp32" (default on CPU), "bf16" (default on GPU) or "fp16"; autocast dtype.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if precision is None:
        precision = "bf16" if dev.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise BackboneError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")

    if name in EXTRA_BACKBONES:
        default_weights = EXTRA_BACKBONES.get(name)()
        if pretrained in ("default", "") or (pretrained is None and default_weights is not None):
            pretrained = str(default_weights) if default_weights is not None else None
    if name not in open_clip.list_models():
        raise BackboneError(
            f"unknown model {name!r}; run `ncprompt models` for the {len(open_clip.list_models())} known "
            "architectures (e.g. ViT-B-16, RN50) or use a project backbone such as 'pocket'"
        )

    path = Path(pretrained).expanduser() if pretrained else None
    looks_like_file = path is not None and (path.suffix in CHECKPOINT_SUFFIXES or "/" in str(pretrained))
    if path is not None and looks_like_file and not path.is_file():
        raise BackboneError(f"checkpoint file {path} does not exist (expected weights for architecture {name!r})")

    model = open_clip.create_model(name, pretrained=None)
    if path is not None and path.is_file():
        _load_file_weights(model, name, path)
        weights_id = _file_id(path)
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise BackboneError(
                f"unknown pretrained tag {pretrained!r} for {name!r}; known tags: {tags or 'none'}; "
                "or pass a path to a local checkpoint file"
            )
        try:
            model = open_clip.create_model(name, pretrained=pretrained)
        except Exception as e:  # noqa: BLE001 - network errors surface in many types
            raise BackboneError(
                f"could not fetch weights {name}/{pretrained} ({type(e).__name__}: {e}). Without network, "
                "download the checkpoint elsewhere and pass its file path to --pretrained"
            ) from e
        weights_id = f"tag:{pretrained}"
    else:
        weights_id = "random-init"

    from open_clip.model import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = PreprocessCfg(**get_model_preprocess_cfg(model))
    eval_tf = image_transform_v2(pp, is_train=False)
    train_tf = augmentation_transform(pp)
    model = model.to(dev).eval().requires_grad_(False)
    return Backbone(
        model=model,
        name=name,
        pretrained=pretrained,
        weights_id=weights_id,
        tokenizer=open_clip.get_tokenizer(name),
        train_transform=train_tf,
        eval_transform=eval_tf,
        device=dev,
        precision=precision,
        meta={"preprocess": dict(get_model_preprocess_cfg(model))},
    )
