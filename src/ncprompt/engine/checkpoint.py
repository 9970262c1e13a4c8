"""Resumable checkpoints in safetensors, written atomically.

A checkpoint of epoch e is ``prompt-e{e}.safetensors`` (learned prompt tensors),
``optim-e{e}.safetensors`` (optimizer state, flattened), ``extra-e{e}.safetensors`` (buffers such
as NPT's running image means), then ``state.json`` naming them, written last: a run killed at any
point resumes from the last complete epoch. Older epoch files are removed after ``state.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ncprompt.utils import atomic_write, write_json


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (for safetensors) and JSON-able scalars."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[k] = v
    return tensors, scalars


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = t
    for pid, st in scalars.get("state", {}).items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def save_checkpoint(run_dir: Path, epoch: int, prompt: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    extra: dict[str, torch.Tensor] | None = None, info: dict[str, Any] | None = None) -> None:
    ck = run_dir / "checkpoint"
    ck.mkdir(parents=True, exist_ok=True)
    names = {"prompt": f"prompt-e{epoch}.safetensors", "optim": f"optim-e{epoch}.safetensors",
             "extra": f"extra-e{epoch}.safetensors"}
    atomic_write(ck / names["prompt"], lambda p: save_file(prompt, str(p)))
    o_tensors, o_scalars = optimizer_tensors(opt)
    atomic_write(ck / names["optim"], lambda p: save_file(o_tensors, str(p)))
    atomic_write(ck / names["extra"], lambda p: save_file(dict(extra or {}), str(p)))
    write_json(ck / "state.json", {"epoch": epoch, "files": names, "optimizer": o_scalars, **(info or {})})
    for f in ck.glob("*-e*.safetensors"):
        if f.name not in names.values():
            f.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The last complete checkpoint: {epoch, prompt, optim, optim_scalars, extra}, or None."""
    state_file = run_dir / "checkpoint" / "state.json"
    if not state_file.is_file():
        return None
    state = json.loads(state_file.read_text())
    ck = run_dir / "checkpoint"
    return {
        "epoch": state["epoch"],
        "prompt": load_file(str(ck / state["files"]["prompt"])),
        "optim": load_file(str(ck / state["files"]["optim"])),
        "optim_scalars": state["optimizer"],
        "extra": load_file(str(ck / state["files"]["extra"])),
        "state": state,
    }
