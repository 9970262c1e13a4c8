"""Resumable checkpoints in safetensors, written atomically, read back defensively.

Epochs are counted from 1: the checkpoint after the n-th epoch is ``prompt-e{n}.safetensors`` (learned
prompt tensors), ``optim-e{n}.safetensors`` (optimizer state, flattened), ``extra-e{n}.safetensors`` (buffers
such as NPT's running image means), then ``state.json`` (``"epoch": n, "counted_from": 1``) naming them,
written last: a run killed at any point resumes from the last complete epoch. Older epoch files are removed
after ``state.json``. A checkpoint of an earlier version (no ``counted_from``: ``"epoch"`` was the 0-based
index, files named by it) is still read and resumed.

Reading validates everything a damaged or edited folder could get wrong (JSON types, file names
that must stay inside ``checkpoint/``, tensor names and shapes, non-finite values) and raises a
:class:`CheckpointError` naming the file and the fix. A non-finite prompt is never written.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ncprompt.utils import save_safetensors, write_json

KINDS = ("prompt", "optim", "extra")
_FILE_NAME = re.compile(r"^(prompt|optim|extra)-e\d+\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or resumed; the message names the file and the fix."""


def _fix(ck: Path) -> str:
    return f"delete {ck} to start the run over, or pass --no-resume"


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


def _kind(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return repr(type(v))
    if isinstance(v, (int, float)):
        return "number"
    return "list" if isinstance(v, (list, tuple)) else repr(type(v))


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any],
                      where: Path | None = None) -> None:
    """Load a state split by :func:`optimizer_tensors` into ``opt``, after checking that it fits
    (same groups and option types, state tensors shaped as the parameters, finite numbers)."""
    where = where or Path("checkpoint")
    bad = f"optimizer state in {where} does not fit this run"
    params = [p for g in opt.param_groups for p in g["params"]]
    own = opt.state_dict()["param_groups"]
    groups = scalars.get("param_groups") if isinstance(scalars, dict) else None
    if not isinstance(groups, list) or len(groups) != len(own) or not all(isinstance(g, dict) for g in groups):
        raise CheckpointError(f"{bad} (parameter groups differ); {_fix(where)}")
    for g, ref in zip(groups, own):
        wrong = sorted(k for k in ref if k != "params" and (k not in g or _kind(g[k]) != _kind(ref[k])))
        if wrong or g.get("params") != ref["params"]:
            raise CheckpointError(f"{bad} (group options {wrong or ['params']} differ or have wrong types); "
                                  f"{_fix(where)}")
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        pid, _, k = name.partition(".")
        if not pid.isdigit() or int(pid) >= len(params) or not k:
            raise CheckpointError(f"{bad} (unknown entry {name!r}); {_fix(where)}")
        p = params[int(pid)]
        if t.numel() > 1 and tuple(t.shape) != tuple(p.shape):
            raise CheckpointError(f"{bad} ({name!r} has shape {tuple(t.shape)}, the parameter {tuple(p.shape)}); "
                                  f"{_fix(where)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{bad} ({name!r} holds NaN/inf); {_fix(where)}")
        state.setdefault(int(pid), {})[k] = t.to(p.device) if t.numel() > 1 else t
    extra_state = scalars.get("state", {})
    if not isinstance(extra_state, dict):
        raise CheckpointError(f"{bad} ('state' is not a mapping); {_fix(where)}")
    for pid, st in extra_state.items():
        if not str(pid).isdigit() or int(pid) >= len(params) or not isinstance(st, dict):
            raise CheckpointError(f"{bad} (unknown state entry {pid!r}); {_fix(where)}")
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) for v in st.values()):
            raise CheckpointError(f"{bad} (state {pid!r} holds non-numbers); {_fix(where)}")
        state.setdefault(int(pid), {}).update(st)
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{bad} ({e}); {_fix(where)}") from None


def save_checkpoint(run_dir: Path, epoch: int, prompt: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    extra: dict[str, torch.Tensor] | None = None, info: dict[str, Any] | None = None) -> None:
    """Write epoch ``epoch``'s checkpoint; refuses non-finite prompt tensors (the last good
    checkpoint stays in place)."""
    ck = run_dir / "checkpoint"
    nonfinite = sorted(k for k, v in prompt.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if nonfinite:
        raise CheckpointError(f"refusing to checkpoint epoch {epoch + 1}: prompt tensors {nonfinite} hold NaN/inf "
                              f"(training diverged; lower --lr); the previous checkpoint in {ck} is kept")
    names = {kind: f"{kind}-e{epoch + 1}.safetensors" for kind in KINDS}  # the 50th epoch: -e50
    o_tensors, o_scalars = optimizer_tensors(opt)
    save_safetensors(ck / names["prompt"], prompt)
    save_safetensors(ck / names["optim"], o_tensors)
    save_safetensors(ck / names["extra"], dict(extra or {}))
    write_json(ck / "state.json", {"epoch": epoch + 1, "counted_from": 1, "files": names, "optimizer": o_scalars,
                                   **(info or {})})
    for f in ck.glob("*-e*.safetensors"):
        if f.name not in names.values():
            f.unlink(missing_ok=True)


def _read_state(state_file: Path) -> dict[str, Any]:
    ck = state_file.parent
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{state_file} is not valid JSON ({e}); {_fix(ck)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file} is not a JSON object; {_fix(ck)}")
    epoch, files, optim = state.get("epoch"), state.get("files"), state.get("optimizer")
    first = 1 if state.get("counted_from") == 1 else 0  # 0: an earlier version's 0-based epoch index
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < first:
        raise CheckpointError(f"{state_file}: 'epoch' must be an integer >= {first}, got {epoch!r}; {_fix(ck)}")
    if not isinstance(files, dict) or sorted(files) != sorted(KINDS):
        raise CheckpointError(f"{state_file}: 'files' must name the {', '.join(KINDS)} files; {_fix(ck)}")
    for kind, name in files.items():
        # plain names of this folder only: never a path that leads outside the run folder
        if not isinstance(name, str) or not _FILE_NAME.match(name) or not name.startswith(f"{kind}-"):
            raise CheckpointError(f"{state_file}: files.{kind} = {name!r} is not a checkpoint file name "
                                  f"like '{kind}-e{epoch}.safetensors' in {ck}; {_fix(ck)}")
    if not isinstance(optim, dict):
        raise CheckpointError(f"{state_file}: 'optimizer' must be a JSON object; {_fix(ck)}")
    return state


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing; {_fix(path.parent)}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint file {path} is damaged ({e}); {_fix(path.parent)}") from None


def load_checkpoint(run_dir: Path, epochs: int | None = None) -> dict[str, Any] | None:
    """The last complete checkpoint: {epoch (0-based index of the last finished epoch), epochs_done, prompt, optim,
    optim_scalars, extra, state}, or None. Reads the 1-based layout and that of earlier versions (0-based).
    ``epochs``: the run's train.epochs; a checkpoint past them (edited, or of another run) is refused."""
    ck = run_dir / "checkpoint"
    state_file = ck / "state.json"
    if not state_file.is_file():
        return None
    state = _read_state(state_file)
    index = state["epoch"] - (1 if state.get("counted_from") == 1 else 0)
    if epochs is not None and index >= epochs:
        raise CheckpointError(f"{state_file}: epoch {index + 1} is past this run's {epochs} epochs "
                              f"(train.epochs), so it is not this run's checkpoint; {_fix(ck)}")
    out = {kind: _load_tensors(ck / state["files"][kind]) for kind in KINDS}
    for kind in ("prompt", "extra"):
        bad = sorted(k for k, v in out[kind].items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
        if bad:
            raise CheckpointError(f"checkpoint {ck / state['files'][kind]} holds NaN/inf in {bad}; {_fix(ck)}")
    return {"epoch": index, "epochs_done": index + 1, "prompt": out["prompt"], "optim": out["optim"],
            "optim_scalars": state["optimizer"], "extra": out["extra"], "state": state}


__all__ = ["CheckpointError", "load_checkpoint", "optimizer_tensors", "restore_optimizer",
           "save_checkpoint"]
