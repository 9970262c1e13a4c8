"""``ncprompt eval RUN``: a run folder's learned prompt scored again, only under what it was trained with.

Checked before anything is scored (each failure is one :class:`RunFolderError` line naming the fix):

* **settings**: only :data:`EVAL_KEYS` (the evaluation data, the test cap, targets, device, precision, threads, cache
  and diagnostics) may differ from the run's ``config.yaml``; any other key (the model and weights, the method
  and its options, training, NPT, shots and seed) defines the trained prompt and is refused;
* **prompt**: ``prompt.safetensors``, or the last checkpoint of an unfinished run (with a warning naming its
  epoch); a trainable method with neither is refused (it would score the untrained context); every tensor must
  be a finite floating-point tensor of the method's dtype (never cast) and fit the method (names, shapes);
* **inputs** against ``inputs.json``: the weights always; on the run's own dataset (same ``data.dataset`` and
  ``data.options``) also its class names and every split whose selection settings are unchanged. A new
  ``data.root`` (a moved dataset) is compared by the location-independent (``portable.``) digests, so the
  content must be the same; other data is evaluated with ``--targets NAME=ROOT`` or ``--dataset``;
* **output**: ``--json`` never replaces a file of a run folder (``results.json``, ``config.yaml`` ...).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ncprompt.config import RunConfig, merge_layers
from ncprompt.config.run import flatten
from ncprompt.engine.results import RunResult
from ncprompt.engine.run_folder import LOCK, PORTABLE, RUN_DIRS, RUN_FILES, RunFolder, RunFolderError
from ncprompt.methods import METHODS
from ncprompt.methods.base import PromptMethod
from ncprompt.protocols.experiment import Experiment, load_run, load_train_means

log = logging.getLogger("ncprompt")

#: the keys ``eval`` may change: what is evaluated and how it is computed, never what was trained
EVAL_KEYS = ("data.dataset", "data.root", "data.options", "data.protocol", "data.base_classes",
             "data.max_test_per_class", "data.eval_split", "data.targets", "data.workers",
             "run.device", "run.precision", "run.output", "run.cache_dir", "run.use_cache", "run.diagnostics",
             "run.threads")


@dataclass
class EvalPlan:
    """A checked request to evaluate ``run_dir``: the config it was trained with, the one to evaluate under,
    and its learned prompt (None for a method that learns nothing)."""

    run_dir: Path
    trained: RunConfig
    config: RunConfig
    prompt: dict[str, torch.Tensor] | None
    prompt_file: str


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def eval_config(trained: RunConfig, over: dict[str, Any]) -> RunConfig:
    """``trained`` with the overrides ``over``; refuses an override of a key outside :data:`EVAL_KEYS`."""
    new = RunConfig.from_dict(merge_layers(trained.to_dict(), over))
    a, b = flatten(trained.to_dict()), flatten(new.to_dict())
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in EVAL_KEYS]
    if changed:
        shown = ", ".join(f"{k} {_show(a.get(k))} -> {_show(b.get(k))}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise RunFolderError(f"eval: {shown}{more} would score the prompt under settings it was not trained with; "
                             f"eval may change only {', '.join(EVAL_KEYS)}; train a run with those settings instead")
    return new


def check_json_target(run_dir: Path, json_path: str | None) -> None:
    """Refuse a ``--json`` path that would replace a file of this (or another) run folder."""
    if not json_path:
        return
    j = Path(json_path).expanduser().resolve()
    own = Path(run_dir).expanduser().resolve()
    for folder in (j.parent, j.parent.parent):  # a run file, or a file in a run's checkpoint/ or plots/
        if folder != own and not (folder / "config.yaml").is_file():
            continue
        if (folder == j.parent and j.name in (*RUN_FILES, LOCK)) or any(j.is_relative_to(folder / d) for d in RUN_DIRS):
            raise RunFolderError(f"--json {json_path} would replace a file of the run folder {folder}; eval never "
                                 f"overwrites a run's files: write elsewhere, e.g. --json {own / 'eval.json'}")


def prepare_eval(run_dir: str | Path, over: dict[str, Any], json_path: str | None = None) -> EvalPlan:
    """Read and check the run folder, the overrides and ``--json`` (nothing heavy is loaded)."""
    d = Path(run_dir)
    check_json_target(d, json_path)
    trained, prompt = load_run(d)
    new = eval_config(trained, over)
    source = "prompt.safetensors" if (d / "prompt.safetensors").is_file() else "checkpoint"
    if prompt is None and METHODS.get(trained.method.name).trainable:
        raise RunFolderError(f"{d} holds no learned prompt (no prompt.safetensors and no checkpoint: deleted, or the "
                             "run stopped before its first epoch ended), so eval would score the untrained context; "
                             "rerun `ncprompt train` with the same --output to train it")
    if prompt is not None and source == "checkpoint":
        state = _checkpoint_epoch(d)
        log.warning("warning: %s is unfinished: evaluating the prompt of its checkpoint (epoch %s/%s), not a "
                    "trained run", d, state, trained.train.epochs)
    return EvalPlan(d, trained, new, prompt, str(d / source))


def _checkpoint_epoch(d: Path) -> int:
    """Epochs held by the checkpoint (its state.json was validated by :func:`load_run`; counted from 1 since
    ``counted_from: 1``, from 0 before)."""
    state = json.loads((d / "checkpoint" / "state.json").read_text())
    return int(state["epoch"]) + (0 if state.get("counted_from") == 1 else 1)


def check_prompt(state: dict[str, torch.Tensor], method: PromptMethod, where: str) -> None:
    """Every tensor finite, floating point and of the method's own dtype (an edited file is never cast)."""
    own = method.prompt_state()
    for k, v in sorted(state.items()):
        want = own.get(k)
        if not v.is_floating_point() or (want is not None and v.dtype != want.dtype):
            raise RunFolderError(f"{where}: prompt tensor {k!r} is {v.dtype}, the method's is "
                                 f"{want.dtype if want is not None else 'floating point'}; the file was edited or "
                                 "written by something else: retrain the run (ncprompt train --no-resume)")
        if not bool(torch.isfinite(v).all()):
            raise RunFolderError(f"{where}: prompt tensor {k!r} holds NaN/inf, which would score chance; retrain the "
                                 "run (ncprompt train --no-resume)")


def _same(trained: RunConfig, new: RunConfig, keys: tuple[str, ...]) -> bool:
    return all(getattr(trained.data, k) == getattr(new.data, k) for k in keys)


def compared_inputs(trained: RunConfig, new: RunConfig, recorded: dict[str, str]) -> list[str]:
    """The inputs.json keys that must match when ``trained``'s prompt is evaluated under ``new``: the weights;
    on the run's own dataset its class names, the training images (same protocol and base classes) and the
    test splits (also the same test cap); targets named alike under the same test cap."""
    keys = ["weights"]
    if _same(trained, new, ("dataset", "options")):
        keys.append("classes")
        if _same(trained, new, ("protocol", "base_classes")):
            keys.append("data.train")
            if _same(trained, new, ("max_test_per_class", "eval_split")):
                keys += sorted(k for k in recorded if k.startswith("data.test."))
    if _same(trained, new, ("max_test_per_class", "eval_split")):
        keys += sorted(k for k in recorded if k.startswith("data.target.") and k[12:] in new.data.targets)
    return keys


def check_inputs(plan: EvalPlan, inputs: dict[str, str]) -> None:
    """Refuse to score the prompt on weights or data other than it was trained on (see the module docstring)."""
    d, trained, new = plan.run_dir, plan.trained, plan.config
    recorded = RunFolder(d).recorded_inputs()
    if recorded is None:
        raise RunFolderError(f"{d} recorded no inputs.json (an earlier ncprompt), so the weights and data its prompt "
                             "was trained on cannot be checked; retrain it (ncprompt train --no-resume)")
    moved = new.data.root != trained.data.root and _same(trained, new, ("dataset", "options"))

    def key(k: str) -> str:  # a moved dataset: the digests that do not depend on where it lies
        portable = moved and k.startswith("data.") and PORTABLE + k in recorded
        return PORTABLE + k if portable else k

    diff = [k for k in compared_inputs(trained, new, recorded) if recorded.get(key(k)) != inputs.get(key(k))]
    if not diff:
        return
    what = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
    if diff[0] == "weights":
        raise RunFolderError(f"{d} was trained on other weights than {new.run.model} "
                             f"{new.run.pretrained or '(built-in)'} holds now ({recorded.get('weights')} -> "
                             f"{inputs.get('weights')}); restore the weights it was trained with, or retrain")
    if moved:
        raise RunFolderError(f"--root {new.data.root} does not hold the data {d} was trained on (differs: {what}); "
                             "give the folder the dataset was moved to, or evaluate other data with --targets "
                             "NAME=ROOT")
    raise RunFolderError(f"the data of {d} changed since it was trained (differs: {what}); restore it, or evaluate "
                         "other data with --targets NAME=ROOT")


def evaluate_run(plan: EvalPlan) -> RunResult:
    """Build the run's method under ``plan.config``, check inputs and prompt, load it and evaluate every split.
    NC4 uses the class means training recorded when the training data is the same."""
    exp = Experiment(plan.config)
    check_inputs(plan, exp.inputs())
    method = exp.build()
    if plan.prompt is not None:
        check_prompt(plan.prompt, method, plan.prompt_file)
        method.load_prompt_state(plan.prompt)
    same = _same(plan.trained, plan.config, ("dataset", "options", "protocol", "base_classes", "shots", "imbalance"))
    means = load_train_means(plan.run_dir) if same else None  # NC4 as training computed it
    return exp.evaluate_all(method, trained=False, train_means=means)


__all__ = ["EVAL_KEYS", "EvalPlan", "check_inputs", "check_json_target", "check_prompt", "compared_inputs",
           "eval_config", "evaluate_run", "prepare_eval"]
