"""``ncprompt models``: the project's embedded models first, then open_clip's architectures,
marking which have weights on this machine and which would need a download.

"Here" means: shipped with the package (embedded models), or an open_clip pretrained tag whose file
is already in the Hugging Face hub cache or open_clip's URL cache (~/.cache/clip). Any architecture
also runs from a local checkpoint file (``--pretrained FILE``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import open_clip


@dataclass
class ModelEntry:
    name: str
    embedded: bool
    help: str = ""
    tags_here: list[str] = field(default_factory=list)
    tags_download: list[str] = field(default_factory=list)
    weights_here: bool = False


def _tag_cached(name: str, tag: str, hf_cache: str | Path | None = None, url_cache: str | Path | None = None) -> bool:
    """Whether open_clip would find the weights of ``name``/``tag`` without the network (the Hugging
    Face hub cache, or open_clip's URL download folder ~/.cache/clip)."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, tag) or {}
    repo = "/".join((cfg.get("hf_hub") or "").strip("/").split("/")[:2])
    if repo.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            try:
                if isinstance(try_to_load_from_cache(repo, fname, cache_dir=hf_cache), str):
                    return True
            except Exception:  # noqa: BLE001 - a malformed repo id is simply "not cached"
                continue
    url = cfg.get("url") or ""
    folder = Path(url_cache) if url_cache else Path.home() / ".cache" / "clip"
    return bool(url) and (folder / os.path.basename(url)).is_file()


def model_catalog(check_cache: bool = True, hf_cache: str | Path | None = None,
                  url_cache: str | Path | None = None) -> list[ModelEntry]:
    """Embedded models (weights shipped) first, then every open_clip architecture, alphabetically."""
    from ncprompt.backbones.openclip import EXTRA_BACKBONES

    out = []
    for name in EXTRA_BACKBONES.names():
        try:
            weights = EXTRA_BACKBONES.get(name)()
        except Exception:  # noqa: BLE001 - a broken embedded model is listed as without weights
            weights = None
        here = weights is not None and Path(weights).exists()
        out.append(ModelEntry(name, True, EXTRA_BACKBONES.describe(name), weights_here=here))
    embedded = {e.name for e in out}
    for name in sorted(open_clip.list_models(), key=str.lower):
        if name in embedded:
            continue
        tags = open_clip.list_pretrained_tags_by_model(name)
        here = [t for t in tags if check_cache and _tag_cached(name, t, hf_cache, url_cache)]
        out.append(ModelEntry(name, False, tags_here=here, tags_download=[t for t in tags if t not in here],
                              weights_here=bool(here)))
    return out


def format_catalog(entries: list[ModelEntry], tags: bool = False, width: int = 100) -> str:
    """The listing printed by ``ncprompt models``."""
    lines = ["Embedded models (weights shipped with ncprompt, run offline):"]
    for e in (e for e in entries if e.embedded):
        state = "weights here" if e.weights_here else "WEIGHTS MISSING (reinstall ncprompt)"
        lines.append(f"  {e.name:14s} {state}; {e.help}")
    cached = [e for e in entries if not e.embedded and e.weights_here]
    lines += ["", "open_clip architectures with weights in the local cache (--model NAME --pretrained TAG):"]
    lines += [f"  {e.name:28s} {', '.join(e.tags_here)}" for e in cached] or ["  (none)"]
    rest = [e for e in entries if not e.embedded and not e.weights_here]
    lines += ["", f"open_clip architectures without weights here ({len(rest)}): need a download "
              "(--pretrained TAG, where the network allows) or a local file (--pretrained FILE):"]
    if tags:
        lines += [f"  {e.name:28s} {', '.join(e.tags_download) or '(no published weights)'}" for e in rest]
    else:
        row = "  "
        for e in rest:
            if len(row) + len(e.name) + 2 > width:
                lines.append(row.rstrip())
                row = "  "
            row += e.name + "  "
        lines.append(row.rstrip())
        lines.append("  (--tags lists the pretrained tags of each)")
    return "\n".join(lines) + "\n"
