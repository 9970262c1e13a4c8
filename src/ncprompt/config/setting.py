"""The *setting* of a run: everything that decides its numbers except the seed.

Tables, ``ncprompt report`` and the grid summary pool runs (mean ± std over seeds, correlations) only
when their settings are equal, so one function says what a setting is. Its items are the resolved
config tree, flattened (``train.lr``: 0.002, every default filled in), with

* left out: the seed (``train.seed``, what is pooled) and what cannot change a result: the run's
  output folder, the feature cache (``run.cache_dir``, ``run.use_cache``), ``train.checkpoint_every``,
  ``data.workers`` (see ``NOT_IN_FINGERPRINT``) and ``run.device`` (CPU and GPU differ only by kernels,
  as thread counts do; ``run.precision`` stays);
* left out, because the method never reads them (:meth:`MethodConfig.unused_keys`): e.g. every
  ``train.*`` key of zero-shot CLIP and the linear probe, the shots of zero-shot CLIP without class
  imbalance, and every ``npt.*`` option but ``npt.enabled`` while NPT is off;
* added from the run folder: the model that really ran (results.json's ``info``), the weights' content
  digest and the data's (inputs.json: class names and templates, every test split and target; not the
  sampled training images, which are the seed's, nor, for a dataset whose images are drawn from the run's
  seed (``data.seed: train.seed``, pocket bench 3), its splits' digests), and the dataset's name as the run
  reported it. Where
  a content digest is recorded, the path it was read from (``run.pretrained`` file, ``data.root``) is
  left out: the same weights or images under another path are the same setting. Randomly initialised
  weights are keyed ``random-init`` without digest (they are drawn from the seed).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ncprompt.config.base import ConfigError, merge
from ncprompt.config.run import NOT_IN_FINGERPRINT, RunConfig, flatten, upgrade_legacy

#: keys of the resolved config that never enter a setting (the seed, and keys that cannot change a result)
NOT_IN_SETTING = (*NOT_IN_FINGERPRINT, "train.seed", "run.device")
#: items that say which data a run used: a dataset's own, not the method's (tables average over them)
DATA_ITEMS = ("dataset", "data.dataset", "data.root", "data.options", "data.base_classes", "inputs.classes",
              "inputs.data.test.")
#: the seed's items of inputs.json (the sampled training images, also as their location-independent digest)
_SEED_INPUTS = ("data.train", "portable.data.train")
#: inputs.json's ``data.seed`` for a dataset drawn from the run's seed (pocket bench 3): then every data digest
#: but the class names' is the seed's too, and seeds of one setting pool
DATA_SEED_FOLLOWS = "train.seed"
_SEED_DATA_INPUTS = ("data.test.", "data.target.", "portable.data.")


def _config_from_results(res: dict[str, Any]) -> dict[str, Any]:
    """The config keys results.json states (older runs without config.yaml)."""
    data = {k: res[r] for k, r in (("dataset", "dataset"), ("protocol", "protocol"), ("shots", "shots"),
                                   ("imbalance", "imbalance")) if res.get(r) is not None}
    out: dict[str, Any] = {"data": data, "npt": {"enabled": bool(res.get("npt"))}}
    if res.get("method"):
        out["method"] = {"name": res["method"]}
    if res.get("model"):
        out["run"] = {"model": res["model"]}
    return out


def _drop(items: dict[str, Any], keys: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``items`` without the keys named, a key ending in "." naming every key it starts."""
    return {k: v for k, v in items.items()
            if not any(k == d or (d.endswith(".") and k.startswith(d)) for d in keys)}


def setting_items(config: RunConfig | dict[str, Any] | None, inputs: dict[str, Any] | None = None,
                  results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The setting of one run as flat items (see the module docstring).

    ``config``: the run's config.yaml (a :class:`RunConfig` or its dict; None: keyed by what results.json
    states, marked ``config: missing``); ``inputs``: its inputs.json; ``results``: its results.json dict."""
    res = results or {}
    known = config is not None
    marks: dict[str, Any] = {"config": "config.yaml" if known else "missing (results.json only)"}
    if isinstance(config, RunConfig):
        cfg: RunConfig | None = config
        raw = config.to_dict()
    else:
        raw = merge(_config_from_results(res), upgrade_legacy(config or {}))
        if not known and res.get("epochs_run"):
            raw["train"] = {"epochs": res["epochs_run"]}
        try:
            cfg = RunConfig.from_dict(raw)
        except ConfigError as e:  # e.g. a plugin method not imported here: its keys as written
            cfg, marks["config"] = None, f"config.yaml not valid here ({str(e)[:60]})"
    # without config.yaml only what results.json states (defaults would claim settings nobody recorded)
    items = _drop(flatten(cfg.to_dict() if cfg is not None and known else raw), NOT_IN_SETTING)
    if cfg is not None:
        unused = list(cfg.method.unused_keys(cfg))
        if not cfg.npt.enabled:
            unused += [k for k in items if k.startswith("npt.") and k != "npt.enabled"]
        items = _drop(items, unused)
    model = ((res.get("info") or {}).get("model") or {}).get("name")
    if model:
        items["run.model"] = model  # the model that ran (a backbone passed in can differ from the config's)
    items["dataset"] = res.get("dataset") or items.get("data.dataset")
    ins = {k: v for k, v in (inputs or {}).items() if k not in _SEED_INPUTS}
    if ins.get("data.seed") == DATA_SEED_FOLLOWS:
        ins = {k: v for k, v in ins.items() if not k.startswith(_SEED_DATA_INPUTS)}
    if "weights" in ins:
        w = str(ins.pop("weights"))
        items["inputs.weights"] = "random-init" if w.startswith("random-init") else w
        items.pop("run.pretrained", None)
    if any(k.startswith("data.test.") for k in ins):
        items.pop("data.root", None)
    items.update({f"inputs.{k}": v for k, v in ins.items()})
    items.update(marks)
    return items


def setting_key(items: dict[str, Any]) -> str:
    """Canonical text of ``items``: equal exactly when the settings are equal (used to group runs)."""
    return json.dumps(items, sort_keys=True, default=str)


def setting_id(items: dict[str, Any]) -> str:
    """A short digest of the setting (12 hex), for file names and logs."""
    return hashlib.sha256(setting_key(items).encode()).hexdigest()[:12]


def split_data(items: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the method's setting, the data's items): tables average the first over datasets."""
    data = {k: v for k, v in items.items() if not _drop({k: v}, DATA_ITEMS)}
    return {k: v for k, v in items.items() if k not in data}, data


def differing(settings: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> list[str]:
    """Keys whose value is not the same in every setting (a key missing from some counts as differing),
    in first-seen order, ``skip`` left out."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if k not in skip
            and len({json.dumps(s[k], sort_keys=True, default=str) if k in s else None for s in settings}) > 1]


def short_name(key: str, keys: list[str]) -> str:
    """``train.crop_min`` -> ``crop_min`` unless another of ``keys`` ends the same way; ``npt.`` and
    ``inputs.`` keep a prefix (``npt.lambda_lc``, ``weights``)."""
    if key.startswith("inputs."):
        return key.removeprefix("inputs.")
    if key.startswith("npt.") or "." not in key:
        return key
    tail = key.rsplit(".", 1)[1]
    return tail if sum(k.rsplit(".", 1)[-1] == tail for k in keys) == 1 else key


def show_value(v: Any) -> str:
    """A compact value: digests cut to 8 hex, lists joined, long text shortened."""
    if isinstance(v, str) and " sha256:" in v:
        head, digest = v.rsplit(" sha256:", 1)
        return f"{head} {digest[:8]}"
    if isinstance(v, (list, tuple)):
        text = "|".join(map(str, v))
    elif isinstance(v, dict):
        text = ",".join(f"{k}:{x}" for k, x in sorted(v.items()))
    else:
        text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(items: dict[str, Any], keys: list[str]) -> str:
    """``"flip=False, crop_min=0.5"``: the named keys of one setting ("?" where it lacks one)."""
    return ", ".join(f"{short_name(k, keys)}={show_value(items[k]) if k in items else '?'}" for k in keys)
