"""``ncprompt export RUN --output DIR``: a trained run as a folder to share (ready for ``huggingface_hub``'s
``upload_folder``; nothing is uploaded here).

The folder holds

* ``head.safetensors``: the classifier as plain tensors, logits = logit_scale * normalise(f) @ weight.T + bias on
  the frozen open_clip image features f (weight: the L2-normalised class text features (K, E), bias (K,): zeros
  for prompt methods, logit_scale (): CLIP's s; a linear probe: W, b, 1), with the class names in the file's
  metadata; written when the method has such a fixed head (text-side prompts, zero-shot, a linear probe with
  ``normalize: true``);
* ``ncprompt_head.json``: the open_clip model name and pretrained tag (or the weights' file name and content
  digest), the preprocessing, the method's and NPT's settings, the class names and templates, and whether plain
  open_clip can run the head (and if not, why and how ``ncprompt.load_run`` does);
* ``README.md``: a model card in Hugging Face's layout (YAML front matter, then what was trained on what and
  the results with their seed);
* the run's ``config.yaml``, ``inputs.json``, ``results.json`` and ``prompt.safetensors``, so
  ``ncprompt.load_run(DIR)`` classifies with the full method (image-side prompts, CoCoOp's per-image context).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ncprompt.config import dump_yaml
from ncprompt.engine.results import RunResult, read_results
from ncprompt.engine.run_folder import INPUTS, RunFolderError
from ncprompt.protocols.predict import TrainedRun, load_run
from ncprompt.utils import save_safetensors, write_json

__all__ = ["export_run"]

HEAD, META, CARD = "head.safetensors", "ncprompt_head.json", "README.md"
#: run files copied as they are, so the exported folder is itself loadable by ``load_run``
RUN_COPY = ("config.yaml", INPUTS, "results.json", "prompt.safetensors")
FORMULA = "logits = logit_scale * normalize(image_features) @ weight.T + bias; probs = softmax(logits)"


def _open_clip_source(run: TrainedRun) -> dict[str, Any]:
    """How plain open_clip builds this model: ``create_model_and_transforms(model_name, pretrained=...)``."""
    b = run.backbone
    name = b.meta.get("open_clip_name", b.name)
    pretrained = b.weights_id.removeprefix("tag:") if b.weights_id.startswith("tag:") else b.pretrained
    return {"model_name": name, "pretrained": pretrained}


def _limits(run: TrainedRun, head: bool) -> str | None:
    """Why plain open_clip cannot reproduce the run's predictions (None when it can)."""
    if not head:
        return (f"{run.method.name} does not classify with a fixed head on the frozen image tower's normalised "
                "features (its image features come from a prompted image tower, its context depends on each image, "
                "or it is a probe on raw features), so plain open_clip cannot run it; "
                "ncprompt.load_run(this folder).predict(images) rebuilds the model, loads prompt.safetensors and "
                "runs the method as trained")
    if run.backbone.random_weights:
        return ("the run used random weights (no pretrained tag or file), which plain open_clip does not redraw; "
                "ncprompt.load_run(this folder) redraws them from the run's seed and checks their digest")
    return None


def export_meta(run: TrainedRun, result: RunResult, head: bool, weights: str) -> dict[str, Any]:
    """The content of ``ncprompt_head.json``."""
    from ncprompt import __version__

    limit = _limits(run, head)
    cfg = run.config
    return {
        "format": "ncprompt-head/1", "ncprompt_version": __version__,
        "open_clip": _open_clip_source(run), "weights": weights,
        "preprocess": run.backbone.meta.get("preprocess"),
        "method": cfg.method.model_dump(mode="json"), "npt": cfg.npt.model_dump(mode="json"),
        "classnames": run.classnames, "templates": run.templates,
        "dataset": cfg.data.dataset, "protocol": cfg.data.protocol, "shots": cfg.data.shots, "seed": cfg.seed,
        "head": HEAD if head else None, "logits": FORMULA if head else None,
        "plain_open_clip": limit is None, "plain_open_clip_note": limit,
        "load_run": "import ncprompt; ncprompt.load_run('<this folder>').predict(['image.png'], top_k=5)",
        "accuracy": result.accuracies(),
    }


def _front_matter(meta: dict[str, Any], result: RunResult) -> str:
    """Hugging Face model-card metadata (YAML between --- lines): library, tags, the eval results."""
    name = f"{meta['method']['name']}{'+npt' if meta['npt']['enabled'] else ''}-{meta['dataset']}-seed{meta['seed']}"
    results = [{"task": {"type": "zero-shot-image-classification" if split == "new" else "image-classification"},
                "dataset": {"name": f"{meta['dataset']} ({split} classes)" if split != "all" else meta["dataset"],
                            "type": meta["dataset"], "split": "test"},
                "metrics": [{"type": "accuracy", "value": round(float(acc), 2), "name": f"top-1 ({split})"}]}
               for split, acc in result.accuracies().items() if split != "hm"]
    card = {"library_name": "open_clip", "tags": ["clip", "prompt-tuning", "ncprompt", meta["method"]["name"]],
            "pipeline_tag": "zero-shot-image-classification",
            "model-index": [{"name": name, "results": results}]}
    return "---\n" + dump_yaml(card) + "---\n"


def model_card(meta: dict[str, Any], result: RunResult) -> str:
    """README.md: front matter, then what was trained on what, the results (with the seed) and how to use it."""
    oc = meta["open_clip"]
    method = meta["method"]["name"] + (" + NPT" if meta["npt"]["enabled"] else "")
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in result.accuracies().items())
    use = (f"Plain open_clip (`{FORMULA}`): see docs/usage.md \"Export\" or the snippet below.\n\n```python\n"
           + USAGE_SNIPPET + "```\n") if meta["plain_open_clip"] else f"Plain open_clip cannot run it: " \
        f"{meta['plain_open_clip_note']}.\n"
    return (_front_matter(meta, result) + f"""
# {method} on {meta['dataset']} ({oc['model_name']})

Prompts trained with ncprompt {meta['ncprompt_version']}: method {method}
({json.dumps(meta['method'])}), on the frozen open_clip model `{oc['model_name']}` (pretrained
`{oc['pretrained']}`; weights {meta['weights']}), dataset `{meta['dataset']}`, protocol {meta['protocol']},
{meta['shots'] if meta['shots'] else 'all'} shots per class, seed {meta['seed']}.

Classes ({len(meta['classnames'])}): {', '.join(meta['classnames'])}.

## Results (seed {meta['seed']}, top-1 %)

| split | top-1 |
|---|---|
{rows}

One seed; run more seeds (`ncprompt protocol --seeds 1 2 3`) for a mean and spread.

## Use

{use}
With ncprompt: `ncprompt predict THIS_FOLDER images/` or
`ncprompt.load_run("THIS_FOLDER").predict(["image.png"], top_k=5)`.

## Files

`{HEAD}` (weight, bias, logit_scale), `{META}` (model, weights, preprocessing, method settings), the run's
config.yaml, inputs.json, results.json and prompt.safetensors.
""")


#: what plain open_clip needs (docs/usage.md shows the same lines; tests/test_export.py runs them)
USAGE_SNIPPET = """import json, open_clip, torch
from PIL import Image
from safetensors.torch import load_file
head, meta = load_file("export/head.safetensors"), json.load(open("export/ncprompt_head.json"))
model, _, preprocess = open_clip.create_model_and_transforms(meta["open_clip"]["model_name"],
                                                             pretrained=meta["open_clip"]["pretrained"])
with torch.no_grad():
    f = torch.nn.functional.normalize(model.eval().encode_image(preprocess(Image.open("photo.png")).unsqueeze(0)))
    probs = (head["logit_scale"] * f @ head["weight"].T + head["bias"]).softmax(-1)[0]
print(meta["classnames"][int(probs.argmax())], float(probs.max()))
"""


def export_run(run_dir: str | Path, output: str | Path, device: str | None = None) -> Path:
    """Write the export folder of the finished run ``run_dir`` (see the module docstring); returns it."""
    out = Path(output).expanduser()
    src = Path(run_dir).expanduser()
    if out.resolve() == src.resolve():
        raise RunFolderError(f"--output {out} is the run folder itself; choose a new folder")
    if out.exists() and (not out.is_dir() or any(p.name not in (HEAD, META, CARD, *RUN_COPY) for p in out.iterdir())):
        raise RunFolderError(f"--output {out} exists and holds other files; choose a new or empty folder")
    run = load_run(src, device=device)  # checks the weights and class names first
    result = read_results(src)
    head = run.method.fixed_head()
    weights = json.loads((src / INPUTS).read_text())["weights"]
    meta = export_meta(run, result, head is not None, weights)
    out.mkdir(parents=True, exist_ok=True)
    (out / HEAD).unlink(missing_ok=True)
    if head is not None:
        save_safetensors(out / HEAD, head, metadata={"classnames": json.dumps(run.classnames),
                                                    "format": meta["format"]})
    for name in RUN_COPY:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    write_json(out / META, meta)
    from ncprompt.utils import atomic_write_bytes

    atomic_write_bytes(out / CARD, model_card(meta, result).encode())
    return out


def cmd_export(a: Any) -> int:
    """``ncprompt export RUN --output DIR``."""
    out = export_run(a.run_dir, a.output, a.device)
    meta = json.loads((out / META).read_text())
    what = "head.safetensors (plain open_clip can run it)" if meta["plain_open_clip"] else \
        f"no plain-open_clip head: {meta['plain_open_clip_note']}"
    print(f"exported {a.run_dir} to {out}: {what}; model card {out / CARD}")
    return 0
