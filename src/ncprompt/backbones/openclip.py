"""open_clip backbones: any architecture by name, weights by pretrained tag, local file or folder.

The model is *read*, never copied: :class:`Backbone` holds the open_clip model, its tokenizer and
transforms, and every later module calls the model's own sub-modules. Loading goes through
open_clip's own factory and checkpoint loader, so every name scheme open_clip knows works
(architecture names with pretrained tags, ``hf-hub:org/repo``, ``local-dir:/folder``) and
open_clip's conversions apply (``logit_bias``, big_vision ``.npz``, custom-text key layout; not its
position-embedding resize: a file of another context length or image size is refused). Around it this
module adds:

* safety: local weights are inspected before open_clip reads them: ``.safetensors`` (preferred)
  must parse, ``.pt``/``.bin`` are read with ``torch.load(weights_only=True)`` only, OpenAI
  TorchScript archives are read through ``torch.jit.load`` (no pickled Python code);
* OpenAI checkpoints get QuickGELU: a TorchScript archive, or a state dict that still carries
  OpenAI's ``input_resolution``/``context_length``/``vocab_size`` entries, builds the
  architecture with ``quick_gelu=True`` (as OpenAI trained it; logged); so does a pretrained
  tag whose open_clip entry says ``quick_gelu``. A converted state dict without those entries
  cannot be told apart: name the ``-quickgelu`` architecture (e.g. ``ViT-B-16-quickgelu``);
* one-line errors (:class:`BackboneError`) naming the file or name and the fix;
* the model is built once; open_clip's "initialized randomly" notice is dropped when a file is
  loaded into the fresh model right after.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from ncprompt.backbones.precision import (
    PrecisionError,
    check_precision,
    default_precision,
    keep_layernorm_fp32,
    make_grad_scaler,
)
from ncprompt.backbones.precision import autocast as _autocast
from ncprompt.backbones.text_encoder import text_tower
from ncprompt.registry import Registry

log = logging.getLogger(__name__)

# Extra backbones shipped by the project (e.g. "pocket"); each entry returns the open_clip
# ``local-dir:`` folder (open_clip_config.json + one weights file) that holds it.
EXTRA_BACKBONES: Registry[Any] = Registry("backbone")

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")
#: entries only OpenAI's released checkpoints carry (TorchScript attributes kept in their state dict)
OPENAI_MARKER_KEYS = ("input_resolution", "context_length", "vocab_size")
HF_HUB, LOCAL_DIR = "hf-hub:", "local-dir:"


class BackboneError(ValueError):
    """A backbone cannot be built or its weights cannot be loaded; the message says how to fix it."""


@dataclass
class Backbone:
    """A frozen open_clip model with everything needed around it.

    Attributes:
        model: the open_clip ``CLIP`` / ``CustomTextCLIP`` (eval mode, ``requires_grad_(False)``).
        name: the name it was loaded by; ``pretrained``: tag, file path or ``None`` (random weights).
        weights_id: a string identifying the weights (tag, or file name + content hash), for caching.
        precision: "fp32", "bf16" or "fp16": autocast dtype of both encoders (:mod:`.precision`).
        meta: preprocessing config, ``quick_gelu`` and where the weights came from.
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

    def __post_init__(self) -> None:
        self.set_precision(self.precision)

    def set_precision(self, precision: str) -> None:
        """Switch the autocast precision (validated for the device; LayerNorms kept in fp32)."""
        try:
            self.precision = check_precision(precision, self.device)
        except PrecisionError as e:
            raise BackboneError(str(e)) from None
        if self.precision != "fp32":
            keep_layernorm_fp32(self.model)

    def with_augmentation(self, crop_min: float = 0.08, flip: bool = True) -> Backbone:
        """The same frozen model (shared, not copied) with training views made by a random resized crop of
        area fraction in [crop_min, 1] and an optional horizontal flip (the feature cache keys on it)."""
        from open_clip.transform import PreprocessCfg

        pp = PreprocessCfg(**self.meta["preprocess"]) if "preprocess" in self.meta else None
        if pp is None:
            raise BackboneError(f"{self.name}: no preprocess config to build training views from")
        return replace(self, train_transform=augmentation_transform(pp, scale=(crop_min, 1.0), flip=flip))

    @property
    def text_tower(self) -> nn.Module:
        """The module holding the text transformer (the model itself, or ``model.text``)."""
        return text_tower(self.model)

    @property
    def embed_dim(self) -> int:
        """Joint embedding dim: the text projection's output (or the tower's output_dim / width)."""
        t = self.text_tower
        proj = getattr(t, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return int(proj.out_features)
        if proj is not None:
            return int(proj.shape[1])
        if getattr(t, "output_dim", None):
            return int(t.output_dim)
        return self.text_width

    @property
    def text_width(self) -> int:
        """Width of the token embeddings (the prompt vectors' size)."""
        emb = getattr(self.text_tower, "token_embedding", None)
        if emb is None:
            raise BackboneError(f"{self.name}'s {type(self.text_tower).__name__} text tower has no token embedding; "
                                "prompt tuning needs an open_clip text transformer (e.g. ViT-B-16, EVA02-B-16)")
        return int(emb.weight.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def logit_scale(self) -> float:
        """CLIP's frozen temperature s = exp(logit_scale)."""
        return float(self.model.logit_scale.detach().exp().item())

    @property
    def logit_bias(self) -> float | None:
        """SigLIP's learned logit bias b (None for CLIP); softmax over classes does not depend on it."""
        b = getattr(self.model, "logit_bias", None)
        return None if b is None else float(b.detach().reshape(-1)[0])

    @property
    def random_weights(self) -> bool:
        return self.meta.get("weights") == "random"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the chosen precision (a no-op for fp32)."""
        return _autocast(self.device, self.precision)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler for the trainer: active under fp16 only (see ``precision.backward_and_step``)."""
        return make_grad_scaler(self.device, self.precision)

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


def augmentation_transform(pp: Any, scale: tuple[float, float] = (0.08, 1.0), flip: bool = True) -> Any:
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
    return sorted(set(open_clip.list_models()) | set(EXTRA_BACKBONES.names()))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (default: cuda when visible); a one-line error when it is not usable."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackboneError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise BackboneError(f"--device {device} requested but no CUDA GPU is visible; use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise BackboneError(f"--device {device} requested but only {n} CUDA GPU(s) are visible "
                                f"(cuda:0..cuda:{n - 1}); pick one of them or --device cpu")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise BackboneError(f"--device {device} requested but MPS is not available; use --device cpu")
    return dev


# ----------------------------------------------------------------------------- checkpoint files


@dataclass
class CheckpointFile:
    """A local weights file, inspected: ``kind`` is safetensors | pickle | torchscript | npz."""

    path: Path
    kind: str
    openai: bool = False


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_torchscript(path: Path) -> bool:
    """A zip archive laid out as TorchScript (what ``torch.load`` would hand to ``torch.jit.load``)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or n == "constants.pkl" or "/code/" in n for n in names)


def _unwrap(sd: Any) -> Any:
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    return sd


def inspect_checkpoint(path: Path, label: str = "the model") -> CheckpointFile:
    """Check that ``path`` is a readable weights file and whether it is in OpenAI's format, without
    unpickling arbitrary objects. Raises :class:`BackboneError` naming the file and the fix."""
    if not path.is_file():
        raise BackboneError(f"checkpoint file {path} does not exist (expected weights for {label!r}); pass an "
                           "existing weights file to --pretrained")
    if path.stat().st_size == 0:
        raise BackboneError(f"checkpoint file {path} is empty; re-download or re-save the weights")
    if path.suffix in (".npz", ".npy"):
        return CheckpointFile(path, "npz")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = list(f.keys())
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise BackboneError(f"checkpoint file {path} is not a readable .safetensors file ({_first_line(e)}): it is "
                                "truncated, corrupt or not safetensors; re-download or re-save it") from None
        if not keys:
            raise BackboneError(f"checkpoint file {path} holds no tensors; re-save the model's state dict")
        return CheckpointFile(path, "safetensors", openai=any(k in keys for k in OPENAI_MARKER_KEYS))
    if _is_torchscript(path):
        return CheckpointFile(path, "torchscript", openai=True)
    try:
        sd = _unwrap(torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)))
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt files surface in many types
        raise BackboneError(
            f"cannot read checkpoint {path} ({_first_line(e)}); only tensor state dicts are read (weights_only=True): "
            "re-save it with torch.save(model.state_dict(), ...) or as .safetensors") from None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneError(f"checkpoint {path} holds no state dict of tensors; re-save the model's state dict")
    keys = [k[len("module."):] if k.startswith("module.") else k for k in sd]
    return CheckpointFile(path, "pickle", openai=any(k in keys for k in OPENAI_MARKER_KEYS))


@contextlib.contextmanager
def _readable_by_open_clip(ckpt: CheckpointFile, model: nn.Module) -> Iterator[str]:
    """A path open_clip's ``load_checkpoint`` can read: the file itself or, for OpenAI's formats, its
    tensors without OpenAI's attribute entries (and, for a TorchScript archive read with
    ``torch.jit.load``, without buffers the model does not save, e.g. a scripted ``attn_mask``) in a
    temporary .safetensors file."""
    if not ckpt.openai:
        yield str(ckpt.path)
        return
    drop = set(OPENAI_MARKER_KEYS)
    if ckpt.kind == "torchscript":
        try:
            with warnings.catch_warnings():  # torch marks TorchScript deprecated; OpenAI's files still are
                warnings.simplefilter("ignore", FutureWarning)
                sd = torch.jit.load(str(ckpt.path), map_location="cpu").state_dict()
        except Exception as e:  # noqa: BLE001 - jit raises RuntimeError/ValueError/zip errors
            raise BackboneError(
                f"checkpoint {ckpt.path} is laid out as a TorchScript archive but torch.jit.load cannot read it "
                f"({_first_line(e)}); re-download it or pass a state dict (.safetensors)") from None
        drop |= {k for k, _ in model.named_buffers()} - set(model.state_dict())
    else:
        from open_clip.factory import load_state_dict

        sd = load_state_dict(str(ckpt.path), weights_only=True)
    from safetensors.torch import save_file

    tensors = {k: v.detach().clone().contiguous() for k, v in sd.items() if k not in drop}
    del sd
    with tempfile.TemporaryDirectory(prefix="ncprompt-openai-") as tmp:
        out = Path(tmp) / "weights.safetensors"
        save_file(tensors, str(out))
        del tensors
        yield str(out)


_MISSING = re.compile(r"Missing key\(s\) in state_dict: (.*?)\.\s*$", re.M)
_UNEXPECTED = re.compile(r"Unexpected key\(s\) in state_dict: (.*?)\.\s*$", re.M)
_SIZE = re.compile(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from "
                   r"checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)")


def _format_diff(missing: list[str], unexpected: list[str], sizes: list[tuple[str, str, str]]) -> str:
    """One line: counts of missing / unexpected keys and shape mismatches, up to 3 examples each."""
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {what} keys (e.g. {', '.join(keys[:3])})")
    if sizes:
        k, a, b = sizes[0]
        parts.append(f"{len(sizes)} shape mismatches (e.g. {k}: file {a} vs model {b})")
    return "; ".join(parts)


def _mismatch_summary(msg: str) -> str:
    """:func:`_format_diff` of torch's multi-line ``load_state_dict`` error message."""
    keys = {}
    for what, rx in (("missing", _MISSING), ("unexpected", _UNEXPECTED)):
        m = rx.search(msg)
        keys[what] = re.findall(r'"([^"]+)"', m.group(1)) if m else []
    return _format_diff(keys["missing"], keys["unexpected"], _SIZE.findall(msg)) or _first_line(RuntimeError(msg))


def _compare_keys(model: nn.Module, readable: str) -> str:
    """:func:`_format_diff` of a weights file against ``model`` after open_clip's key conversions
    ("" when keys and shapes agree)."""
    from open_clip.factory import load_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    try:
        sd = open_clip.factory.convert_state_dict(model, load_state_dict(readable, weights_only=True))
    except Exception:  # noqa: BLE001 - only a diagnostic
        return ""
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    own = model.state_dict()
    sizes = [(k, str(list(sd[k].shape)), str(list(own[k].shape))) for k in own
             if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    return _format_diff(sorted(set(own) - set(sd)), sorted(set(sd) - set(own)), sizes)


class _WouldResize(Exception):
    """open_clip was about to interpolate a position embedding to the model's length."""


def _refusing(resize: Any) -> Any:
    def guarded(state_dict: dict[str, torch.Tensor], model: nn.Module, *args: Any, **kwargs: Any) -> None:
        before = {k: tuple(v.shape) for k, v in state_dict.items() if k.endswith("positional_embedding")}
        probe = dict(state_dict)  # open_clip writes the resized tensor into the mapping it is given
        resize(probe, model, *args, **kwargs)
        if any(tuple(probe[k].shape) != shape for k, shape in before.items()):
            raise _WouldResize
    return guarded


@contextlib.contextmanager
def _no_resizing() -> Iterator[None]:
    """Within: open_clip's ``load_checkpoint`` raises :class:`_WouldResize` where it would interpolate a text
    or image position embedding of another length (``resize_text_pos_embed`` / ``resize_pos_embed``): a
    checkpoint of another context length or image size is another model, whose numbers would change."""
    from open_clip import factory

    saved = {n: getattr(factory, n) for n in ("resize_pos_embed", "resize_text_pos_embed") if hasattr(factory, n)}
    for name, fn in saved.items():
        setattr(factory, name, _refusing(fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(factory, name, fn)


def _load_file(model: nn.Module, ckpt: CheckpointFile, label: str) -> None:
    """Load ``ckpt`` into ``model`` with open_clip's own ``load_checkpoint`` (strict, with its
    conversions, but no position-embedding resizing: a file of another context length or image size is
    refused); any failure becomes one line naming the file, the differing keys and the fix."""
    with _readable_by_open_clip(ckpt, model) as readable:
        try:
            with _no_resizing():
                open_clip.load_checkpoint(model, readable, strict=True, weights_only=True)
            return
        except Exception as e:  # noqa: BLE001 - conversion code raises RuntimeError/AssertionError/KeyError/...
            error = e
            diff = _mismatch_summary(str(e)) if "Error(s) in loading state_dict" in str(e) else _compare_keys(
                model, readable)
    if diff:
        raise BackboneError(f"checkpoint {ckpt.path} does not match architecture {label!r}: {diff}; pass the "
                            "--model this checkpoint was trained with (see `ncprompt models`)")
    raise BackboneError(f"cannot load checkpoint {ckpt.path} into {label!r} ({type(error).__name__}: "
                        f"{_first_line(error)}); pass a state dict saved from this architecture")


def _file_id(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"file:{path.name}:{h.hexdigest()[:16]}"


class _DropRandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" and its note on the
    checkpoint it found in a folder: the model is built without weights and our file loaded next."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("No pretrained weights loaded", "Multiple checkpoints found"))


@contextlib.contextmanager
def _weights_follow() -> Iterator[None]:
    root = logging.getLogger()  # open_clip logs through the root logger (logging.warning)
    f = _DropRandomInitNotice()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


# ----------------------------------------------------------------------------- name resolution


@dataclass
class _Source:
    """What to hand open_clip: ``arch`` for create_model, and a local file, a tag or neither."""

    arch: str
    file: Path | None = None
    tag: str | None = None
    folder: Path | None = None


def _folder_weights(folder: Path) -> Path:
    """The one weights file of a ``local-dir:`` folder (.safetensors preferred, as open_clip does)."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES]
    st = [p for p in files if p.suffix == ".safetensors"]
    candidates = st or files
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise BackboneError(f"no weights file in {folder} (expected one .safetensors next to open_clip_config.json)")
    raise BackboneError(f"several weights files in {folder} ({', '.join(p.name for p in candidates)}); keep one, or "
                        "pass the one to use with --pretrained")


def _local_dir(folder: Path, shown: str) -> Path:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise BackboneError(f"model folder {folder} ({shown}) does not exist; a local-dir: model is a folder with "
                            "open_clip_config.json and one weights file")
    cfg = folder / "open_clip_config.json"
    if not cfg.is_file():
        raise BackboneError(f"{cfg} is missing; a local-dir: model folder needs open_clip's open_clip_config.json "
                            "({\"model_cfg\": ..., \"preprocess_cfg\": ...}) next to its weights")
    try:
        import json

        ok = "model_cfg" in json.loads(cfg.read_text())
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise BackboneError(f"{cfg} is not valid JSON ({_first_line(e)}); fix or regenerate it") from None
    if not ok:
        raise BackboneError(f"{cfg} has no 'model_cfg' entry; open_clip's local-dir format is "
                            "{\"model_cfg\": {...}, \"preprocess_cfg\": {...}}")
    return folder


def _looks_like_file(pretrained: str) -> bool:
    p = Path(pretrained).expanduser()
    return p.suffix in CHECKPOINT_SUFFIXES or "/" in pretrained or "\\" in pretrained or p.exists()


def resolve_source(name: str, pretrained: str | None) -> _Source:
    """Map (name, pretrained) to open_clip's arguments; raises for unknown names, tags and files."""
    if pretrained == "":
        pretrained = None
    if name in EXTRA_BACKBONES or name.startswith(LOCAL_DIR):
        if name in EXTRA_BACKBONES:
            folder = _local_dir(Path(EXTRA_BACKBONES.get(name)()), name)
        else:
            folder = _local_dir(Path(name[len(LOCAL_DIR):]), name)
        src = _Source(arch=f"{LOCAL_DIR}{folder}", folder=folder)
        if pretrained in (None, "default"):
            src.file = _folder_weights(folder)
        elif pretrained != "random":
            if not _looks_like_file(pretrained):
                raise BackboneError(f"{name} takes a weights file, 'default' (its own weights) or 'random' as "
                                    f"pretrained, not the tag {pretrained!r}")
            src.file = Path(pretrained).expanduser()
        return src
    if name.startswith(HF_HUB):
        if pretrained is not None:
            raise BackboneError(f"--pretrained {pretrained!r} cannot be combined with {name}: the Hub repository "
                                "holds the weights; use local-dir:<folder> for your own files")
        return _Source(arch=name)
    if name not in open_clip.list_models():
        raise BackboneError(
            f"unknown model {name!r}; run `ncprompt models` for the {len(open_clip.list_models())} known architectures "
            "(e.g. ViT-B-16, RN50), hf-hub:<org/repo>, local-dir:<folder>, or a project backbone such as 'pocket'")
    if pretrained is None or pretrained == "random":
        return _Source(arch=name)
    if _looks_like_file(pretrained):
        return _Source(arch=name, file=Path(pretrained).expanduser())
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise BackboneError(f"unknown pretrained tag {pretrained!r} for {name!r}; known tags: {tags or 'none'}; "
                            "or pass a path to a local checkpoint file")
    return _Source(arch=name, tag=pretrained)


def _config_quick_gelu(arch: str) -> bool:
    cfg = open_clip.get_model_config(arch) or {}
    return bool(cfg.get("quick_gelu", False))


def _tokenizer(arch: str, name: str) -> Any:
    try:
        return open_clip.get_tokenizer(arch)
    except Exception as e:  # noqa: BLE001 - HF tokenizers fail with import/network errors
        raise BackboneError(f"the tokenizer of {name} cannot be loaded ({type(e).__name__}: {_first_line(e)}); "
                            "Hugging Face tokenizers need the `transformers` package and network (or a filled HF "
                            "cache); pick a model with open_clip's own tokenizer (`ncprompt models`)") from None


def _fetch_error(src: _Source, e: Exception) -> BackboneError:
    what = f"{src.arch} from the Hugging Face Hub" if src.tag is None else f"weights {src.arch}/{src.tag}"
    fix = ("download the repository elsewhere and load it as local-dir:<folder>" if src.tag is None
           else "download the checkpoint elsewhere and pass its file to --pretrained")
    return BackboneError(f"could not fetch {what} ({type(e).__name__}: {_first_line(e)}); this needs network: "
                         f"offline, {fix}")


def load_backbone(
    name: str,
    pretrained: str | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    quick_gelu: bool | None = None,
) -> Backbone:
    """Build an open_clip model through open_clip's factory and load its weights.

    Args:
        name: any ``open_clip.list_models()`` name, ``hf-hub:org/repo`` (network), ``local-dir:/folder``
            (open_clip_config.json + one weights file), or a project backbone such as ``"pocket"``.
        pretrained: an open_clip pretrained tag (downloaded; network), a local weights file
            (.safetensors/.pt/.pth/.bin/.npz, open_clip or OpenAI format, TorchScript included),
            ``None`` (random weights; for folders and project backbones: their own weights),
            ``"default"`` (a folder's own weights) or ``"random"``.
        device: "cpu", "cuda", "cuda:N" (default: cuda when visible).
        precision: "fp32", "bf16" or "fp16" (default: bf16/fp16 on GPU, fp32 on CPU): autocast dtype.
        quick_gelu: force QuickGELU on/off; ``None`` decides from the checkpoint (OpenAI format or the
            tag's open_clip entry -> on) and the architecture's config.
    """
    dev = resolve_device(device)
    try:
        precision = check_precision(precision or default_precision(dev), dev)
    except PrecisionError as e:
        raise BackboneError(str(e)) from None
    src = resolve_source(name, pretrained)
    ckpt = inspect_checkpoint(src.file, name) if src.file is not None else None

    kwargs: dict[str, Any] = {}
    why = ""
    if quick_gelu is not None:
        kwargs["quick_gelu"], why = quick_gelu, "requested"
    elif ckpt is not None and ckpt.openai and not _config_quick_gelu(src.arch):
        kwargs["quick_gelu"], why = True, f"{ckpt.path.name} is an OpenAI checkpoint ({ckpt.kind})"
    elif src.tag is not None and open_clip.get_pretrained_cfg(src.arch, src.tag).get("quick_gelu", False):
        kwargs["force_quick_gelu"], why = True, f"pretrained tag {src.tag!r} was trained with it"
    if why and (kwargs.get("quick_gelu") or kwargs.get("force_quick_gelu")):
        log.info("building %s with QuickGELU: %s", name, why)

    tokenizer = None if src.arch.startswith(HF_HUB) else _tokenizer(src.arch, name)
    try:
        if ckpt is not None:
            with _weights_follow():
                model = open_clip.create_model(src.arch, pretrained=None, load_weights=False, **kwargs)
        else:
            # a folder's own weights are loaded as a file above; "random" must not load them here
            model = open_clip.create_model(src.arch, pretrained=src.tag, load_weights=src.folder is None, **kwargs)
    except Exception as e:  # noqa: BLE001 - downloads and builders raise many types
        if src.tag is not None or src.arch.startswith(HF_HUB):
            raise _fetch_error(src, e) from None
        raise BackboneError(f"open_clip cannot build {name} ({type(e).__name__}: {_first_line(e)})") from None
    if ckpt is not None:
        _load_file(model, ckpt, name)
        weights_id, weights = _file_id(ckpt.path), str(ckpt.path)
    elif src.tag is not None:
        weights_id, weights = f"tag:{src.tag}", f"tag:{src.tag}"
    elif src.arch.startswith(HF_HUB):
        weights_id = weights = src.arch
    else:
        weights_id, weights = "random-init", "random"
    if tokenizer is None:
        tokenizer = _tokenizer(src.arch, name)

    from open_clip.model import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp_dict = dict(get_model_preprocess_cfg(model))
    pp = PreprocessCfg(**pp_dict)
    model = model.to(dev).eval().requires_grad_(False)
    uses_quick_gelu = any(type(m).__name__ == "QuickGELU" for m in model.modules())
    return Backbone(
        model=model,
        name=name,
        pretrained=pretrained if weights != "random" else None,
        weights_id=weights_id,
        tokenizer=tokenizer,
        train_transform=augmentation_transform(pp),
        eval_transform=image_transform_v2(pp, is_train=False),
        device=dev,
        precision=precision,
        meta={"preprocess": pp_dict, "weights": weights, "quick_gelu": uses_quick_gelu,
              "open_clip_name": src.arch, "model_class": type(model).__name__},
    )
