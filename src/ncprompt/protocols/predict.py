"""Classify new images with a trained run folder: ``ncprompt.load_run(path)`` and ``ncprompt predict``.

A run folder is rebuilt from what it recorded, never from the dataset: the config (config.yaml), the
learned prompts (prompt.safetensors), the training class names and the dataset's templates (results.json
``info``), checked before use against inputs.json: the weights' content digest must be the one the run
trained with, and the class names and templates must hash to the recorded ``classes`` digest. Then, for
images x with image features f (as the method sees them) and the class text features t_k,

    p(k | x) = softmax_k( s * cos(f, t_k) )        (a linear probe: softmax_k(W f + b))

and the top-k classes by p are reported. ``--classes`` / :meth:`TrainedRun.for_classes` applies the
learned prompts to other class names (methods with one shared context; a class-specific context or a
linear probe has one row per training class and is refused).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ncprompt.backbones.openclip import Backbone, load_backbone
from ncprompt.config import RunConfig, merge_layers
from ncprompt.data.base import DataError, FileImages, LabeledImages, fingerprint_of
from ncprompt.data.cache import FeatureCache
from ncprompt.data.sources import IMAGE_SUFFIXES, _read_csv_rows
from ncprompt.engine.results import ResultsError, read_results
from ncprompt.engine.run_folder import INPUTS, RunFolderError
from ncprompt.methods import build_method
from ncprompt.methods.base import MethodConfigError, MethodContext, PromptMethod
from ncprompt.protocols import experiment
from ncprompt.protocols.run_eval import check_prompt
from ncprompt.utils import seed_everything

__all__ = ["Prediction", "TrainedRun", "collect_images", "format_predictions", "load_run"]

#: images encoded and scored per block (bounds memory for any number of inputs)
BLOCK = 4096


@dataclass
class Prediction:
    """The top-k classes of one image, most probable first."""

    source: str
    labels: list[str]
    probs: list[float]

    @property
    def label(self) -> str:
        """The most probable class."""
        return self.labels[0]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.source, "predictions": [{"label": c, "prob": p} for c, p in zip(self.labels, self.probs)]}


class PILImages(LabeledImages):
    """In-memory PIL images (unlabelled) as the engine's image sequence."""

    def __init__(self, images: Sequence[Image.Image]) -> None:
        self.images = [im.convert("RGB") for im in images]
        self.labels = np.zeros(len(self.images), dtype=np.int64)
        self.fingerprint = fingerprint_of("pil", [np.asarray(im) for im in self.images])

    def load(self, index: int) -> Image.Image:
        return self.images[index]


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files of ``paths``: image files as given, folders searched recursively (sorted), CSV files read
    as ``path[,...]`` rows (paths relative to the CSV's folder; a header row and any label column ignored)."""
    out: list[Path] = []
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise DataError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        elif p.suffix.lower() == ".csv" and p.is_file():
            rows = _read_csv_rows(p)
            if not rows:
                raise DataError(f"CSV file {p} has no rows; give rows of path[,label]")
            out += [p.parent / r[0].strip() for _, r in rows]
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}), a folder or a CSV file")
            out.append(p)
        else:
            raise DataError(f"{p} does not exist; give image files, folders of images or CSV files of paths")
    return out


def _recorded(run_dir: Path) -> tuple[RunConfig, dict[str, torch.Tensor] | None, dict[str, Any], dict[str, str]]:
    """The config, learned prompt (None: none saved), results.json ``info`` and inputs.json of a finished run
    folder (one-line errors)."""
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist; pass the --output folder of `ncprompt train`")
    cfg, prompt = experiment.load_run(run_dir)
    try:
        res = read_results(run_dir)
    except ResultsError as e:
        raise RunFolderError(f"{run_dir} holds no finished run ({e}); finish it with `ncprompt train` first") from None
    f = run_dir / INPUTS
    try:
        inputs = json.loads(f.read_text())
    except (OSError, ValueError):
        raise RunFolderError(f"{run_dir} has no readable {INPUTS} (an earlier ncprompt), so the weights and class "
                             "names it trained with cannot be checked; rerun its training to record them") from None
    return cfg, prompt, res.info or {}, inputs


def _classes_and_templates(run_dir: Path, cfg: RunConfig, info: dict[str, Any]) -> tuple[list[str], list[str],
                                                                                              list[str]]:
    """(all class names, training class names, templates): from results.json, or the dataset for runs
    that did not record the templates."""
    classes = info.get("classes") or {}
    names = list(classes.get("all") or [])
    templates = info.get("templates")
    if templates is None:  # results.json of an earlier version: the dataset gives the templates
        from ncprompt.data import dataset_options, get_dataset

        try:
            ds = get_dataset(cfg.data.dataset, cfg.data.root, **dataset_options(cfg.data.dataset, cfg.data.options,
                                                                                cfg.seed))
        except DataError as e:
            raise RunFolderError(f"{run_dir}/results.json records no prompt templates and the dataset cannot be read "
                                 f"to find them ({e}); rerun its training with this version") from None
        names, templates = names or list(ds.classnames), list(ds.templates)
    train = list(classes.get("base") or names) if cfg.data.protocol == "base2new" else names
    if not names:
        raise RunFolderError(f"{run_dir}/results.json records no class names; rerun its training with this version")
    return names, train, list(templates)


def _check_inputs(run_dir: Path, inputs: dict[str, str], backbone: Backbone, names: list[str],
                  templates: list[str]) -> None:
    """Refuse weights or class names/templates other than those the run trained with (inputs.json)."""
    weights = experiment.weights_input(backbone)
    if inputs.get("weights") != weights:
        raise RunFolderError(f"{run_dir} was trained with other weights ({inputs.get('weights')}) than "
                             f"{backbone.name} loads now ({weights}); restore those weights or retrain")
    digest = experiment.classes_input(names, templates)
    if inputs.get("classes") != digest:
        raise RunFolderError(f"{run_dir}: the class names and templates in results.json do not match the run's "
                             f"{INPUTS} (classes {inputs.get('classes')} != {digest}); the folder was edited: retrain")


class TrainedRun:
    """A run folder's classifier, ready to label images; build it with :func:`load_run`.

    Attributes: ``path``, ``config`` (:class:`RunConfig`), ``backbone``, ``method`` (the trained
    :class:`PromptMethod`), ``classnames`` (the classes predicted), ``templates``, ``info`` (results.json's).
    """

    def __init__(self, path: Path, config: RunConfig, backbone: Backbone, method: PromptMethod,
                 templates: list[str], info: dict[str, Any]) -> None:
        self.path, self.config, self.backbone, self.method = path, config, backbone, method
        self.templates, self.info = templates, info

    def __repr__(self) -> str:
        return f"TrainedRun({str(self.path)!r}, method={self.method.name!r}, classes={len(self.classnames)})"

    @property
    def classnames(self) -> list[str]:
        return list(self.method.classnames)

    def for_classes(self, classnames: Sequence[str]) -> TrainedRun:
        """The same learned prompts over other class names (refused, one line, for a class-specific context or
        a linear probe)."""
        names = [str(c).strip() for c in classnames]
        if not names or any(not c for c in names) or len(set(names)) != len(names):
            raise MethodConfigError("--classes needs distinct, non-empty class names")
        if names == self.classnames:
            return self
        try:
            m = self.method.for_classnames(names)
        except MethodConfigError as e:
            raise MethodConfigError(f"--classes: {e}") from None
        return TrainedRun(self.path, self.config, self.backbone, m.eval(), self.templates, self.info)

    @torch.no_grad()
    def text_features(self) -> torch.Tensor:
        """The L2-normalised class text features (K, E) the run classifies with (a linear probe: its rows W;
        CoCoOp: the unshifted context's)."""
        self.method.eval()
        return torch.nn.functional.normalize(self.method.text_features().float(), dim=-1).cpu()

    def _images(self, images: Any) -> LabeledImages:
        if isinstance(images, LabeledImages):
            return images
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        items = list(images)
        if items and all(isinstance(x, Image.Image) for x in items):
            return PILImages(items)
        if all(isinstance(x, (str, Path)) for x in items):
            files = collect_images(items)
            return FileImages(files, [0] * len(files))
        raise TypeError("predict takes PIL images, or paths of image files, folders or CSV files")

    @torch.no_grad()
    def probabilities(self, images: Any) -> torch.Tensor:
        """p(k | x) (N, K) of images (PIL images or paths of image files, folders, CSVs)."""
        ims = self._images(images)
        if len(ims) == 0:
            return torch.zeros(0, len(self.classnames))
        feats = self.method.image_features(ims, FeatureCache(enabled=False), desc="predict")
        logits, _ = self.method.predict(feats)
        return logits.float().softmax(dim=-1)

    def predict(self, images: Any, top_k: int = 5) -> list[Prediction]:
        """The ``top_k`` most probable classes of each image (PIL images, or paths of image files, folders
        searched recursively, CSV files of paths), in input order."""
        return list(self.predict_blocks(images, top_k))

    def predict_blocks(self, images: Any, top_k: int = 5, block: int = BLOCK) -> Iterator[Prediction]:
        """:meth:`predict`, encoded and scored ``block`` images at a time (memory stays bounded)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        ims = self._images(images)
        k = min(top_k, len(self.classnames))
        names = self.classnames
        for lo in range(0, len(ims), block):
            part = ims.subset(np.arange(lo, min(lo + block, len(ims))))
            probs = self.probabilities(part)
            top = probs.topk(k, dim=-1)
            for i in range(len(part)):
                src = _source(ims, lo + i)
                yield Prediction(src, [names[j] for j in top.indices[i].tolist()],
                                 [round(float(p), 6) for p in top.values[i]])


def _source(images: LabeledImages, index: int) -> str:
    """The path of image ``index`` (files), or its index."""
    paths = getattr(images, "paths", None)
    return str(paths[index]) if paths is not None else str(index)


def load_run(path: str | Path, device: str | None = None, backbone: Backbone | None = None) -> TrainedRun:
    """A finished run folder as a classifier (:class:`TrainedRun`): its model and weights (checked against
    the digest the run recorded), its learned prompts and class names. ``device`` overrides the run's;
    ``backbone``: an already loaded one (checked the same way)."""
    d = Path(path).expanduser()
    cfg, prompt, info, inputs = _recorded(d)
    if device is not None:
        cfg = RunConfig.from_dict(merge_layers(cfg.to_dict(), {"run": {"device": device}}))
    names, train_names, templates = _classes_and_templates(d, cfg, info)
    seed_everything(cfg.seed)  # random-init weights are drawn as the run drew them (then checked)
    if backbone is None:
        experiment.check_device(cfg.run.device)
        backbone = load_backbone(cfg.run.model, cfg.run.pretrained, cfg.run.device, cfg.run.precision)
    _check_inputs(d, inputs, backbone, names, templates)
    method = build_method(cfg.method, MethodContext(backbone, train_names, templates, dataset=cfg.data.dataset,
                                                    shared_prefix=cfg.train.shared_prefix))
    if method.trainable:
        if not (d / "prompt.safetensors").is_file() or prompt is None:  # (a checkpoint's: an unfinished run)
            raise RunFolderError(f"{d} holds no trained prompt (prompt.safetensors); finish its training with "
                                 "`ncprompt train` first")
        check_prompt(prompt, method, str(d / "prompt.safetensors"))  # finite, the method's dtype: as eval checks
        method.load_prompt_state(prompt)
    return TrainedRun(d, cfg, backbone, method.eval(), templates, info)


def format_predictions(preds: Sequence[Prediction], fmt: str, top_k: int) -> str:
    """CSV (``path,label_1,prob_1,...``) or JSON (a list of ``{path, predictions: [{label, prob}]}``)."""
    if fmt == "json":
        return json.dumps([p.to_dict() for p in preds], indent=1) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    k = max([len(p.labels) for p in preds], default=top_k)
    w.writerow(["path", *[x for i in range(1, k + 1) for x in (f"label_{i}", f"prob_{i}")]])
    for p in preds:
        w.writerow([p.source, *[x for c, q in zip(p.labels, p.probs) for x in (c, f"{q:.6f}")]])
    return buf.getvalue()


def cmd_predict(a: Any) -> int:
    """``ncprompt predict RUN PATH... [--top-k K] [--classes ...] [--output FILE] [--format csv|json]``."""
    import sys

    from ncprompt.utils import atomic_write_bytes

    fmt = a.format or ("json" if a.output and str(a.output).lower().endswith(".json") else "csv")
    files = collect_images(a.paths)  # bad paths are refused before the model loads
    run = load_run(a.run_dir, device=a.device)
    if a.classes:
        run = run.for_classes(read_classes(a.classes))
    print(f"predicting {len(files)} image(s) over {len(run.classnames)} classes with {run.method.name} "
          f"({run.path})", file=sys.stderr)
    preds = list(run.predict_blocks(FileImages(files, [0] * len(files)), a.top_k))
    text = format_predictions(preds, fmt, a.top_k)
    if a.output:
        atomic_write_bytes(a.output, text.encode())
        print(f"predictions: {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def read_classes(given: Sequence[str]) -> list[str]:
    """``--classes``: class names, or one text file of names (one a line)."""
    if len(given) == 1 and Path(given[0]).is_file():
        return [line.strip() for line in Path(given[0]).read_text().splitlines() if line.strip()]
    return list(given)
