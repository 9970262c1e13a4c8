"""One run, end to end, on the one data path every method shares:

images -> cached image features; class names -> prompts -> text features; both -> logits ->
loss (+ NPT regularisers); features -> accuracy and neural-collapse diagnostics.

Files written to the run folder: config.yaml, train_config.json, metrics.jsonl (per epoch),
checkpoint/ (resumable), prompt.safetensors (final learned prompts), results.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ncprompt.backbones.openclip import Backbone, load_backbone
from ncprompt.collapse.regularizers import NPTRegularizer
from ncprompt.config import RunConfig, save_yaml
from ncprompt.data import DataError, DatasetSplits, LabeledImages, get_dataset
from ncprompt.data.cache import CachedFeatures, FeatureCache, FeatureSource, FeatureStore, PixelViews, encode_with
from ncprompt.data.sampling import base_new_split, class_groups, restrict_classes, sample_train
from ncprompt.engine.trainer import train
from ncprompt.methods import build_method
from ncprompt.methods.base import PromptMethod
from ncprompt.methods.zeroshot import zero_shot_classifier
from ncprompt.metrics.classification import classification_report, harmonic_mean
from ncprompt.metrics.neural_collapse import NCAccumulator
from ncprompt.utils import atomic_write, seed_everything, write_json


@dataclass
class EvalSet:
    """A test split with its features and class names (e.g. base or new classes)."""

    name: str
    classnames: list[str]
    features: torch.Tensor
    labels: torch.Tensor
    images: LabeledImages | None = None

    def features_for(self, method: PromptMethod) -> torch.Tensor:
        """Cached frozen-encoder features, or the method's own (prompted) image features."""
        if method.frozen_image_encoder:
            return self.features
        if self.images is None:
            raise ValueError(f"{method.name} needs the images of {self.name!r} to encode them")
        return encode_with(method.encode_images, method.backbone, self.images)


def limit_per_class(split: LabeledImages, max_per_class: int | None, seed: int) -> LabeledImages:
    if not max_per_class:
        return split
    rng = np.random.default_rng(seed + 7919)
    keep = []
    for k in np.unique(split.labels):
        idx = np.flatnonzero(split.labels == k)
        keep.append(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False))
    return split.subset(np.sort(np.concatenate(keep)))


@torch.no_grad()
def predict(method: PromptMethod, features: torch.Tensor, batch: int = 1024) -> tuple[np.ndarray, torch.Tensor]:
    """Predictions and the text features used (computed once for K-wise methods)."""
    method.eval()
    t = method.text_features()
    device = t.device
    preds = []
    for i in range(0, len(features), batch):
        f = features[i : i + batch].to(device)
        logits = method(f).logits if method.image_conditional else method.logits(f, t)
        preds.append(logits.argmax(-1).cpu())
    return torch.cat(preds).numpy(), t


def nc_diagnostics(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
                   preds: np.ndarray | None = None, reference_means: torch.Tensor | None = None) -> dict[str, float]:
    """NC1-NC4 of (normalised) image features against the text features of the same classes."""
    k = text.shape[0]
    present = torch.bincount(labels, minlength=k) > 0
    if int(present.sum()) < 2 or not bool(present.all()):
        return {}
    acc = NCAccumulator(k, features.shape[1])
    acc.update(features, labels)
    if preds is not None:
        acc.update_nc4(features, torch.as_tensor(preds), reference_means=reference_means)
    return acc.compute(text_features=text.detach().cpu())


def evaluate(method: PromptMethod, ev: EvalSet, groups: dict[str, np.ndarray] | None = None,
             diagnostics: bool = True, train_means: torch.Tensor | None = None) -> dict[str, Any]:
    m = method if ev.classnames == method.classnames else method.for_classnames(ev.classnames)
    feats = ev.features_for(m)
    preds, text = predict(m, feats)
    rep = classification_report(ev.labels.numpy(), preds, len(ev.classnames), groups)
    if diagnostics:
        rep["nc"] = nc_diagnostics(feats, ev.labels, text, preds, reference_means=train_means)
    return rep


class Experiment:
    """Prepares the data path for a :class:`RunConfig` and runs training + evaluation."""

    def __init__(self, cfg: RunConfig, backbone: Backbone | None = None, dataset: DatasetSplits | None = None,
                 log=print) -> None:
        self.cfg = cfg
        self.log = log
        seed_everything(cfg.seed)
        self.backbone = backbone or load_backbone(cfg.model, cfg.pretrained, cfg.device, cfg.precision)
        if dataset is None:
            dataset = get_dataset(cfg.dataset, cfg.root, **{"seed": 0, **cfg.dataset_options})
        self.dataset = dataset
        self.cache = FeatureCache(cfg.cache_dir, enabled=cfg.use_cache)
        if cfg.protocol == "base2new":
            base, new = base_new_split(dataset.num_classes)
            self.train_ds = restrict_classes(dataset, base, "base")
            self.eval_sets_ds = {"base": self.train_ds, "new": restrict_classes(dataset, new, "new")}
        else:
            self.train_ds = dataset
            self.eval_sets_ds = {"all": dataset}
        k = self.train_ds.num_classes
        #: zero-shot with shots=0 never touches the training images
        self.uses_train = not (cfg.method == "zeroshot" and not cfg.shots)
        if self.uses_train:
            self.train_images, self.counts = sample_train(self.train_ds.train, k, cfg.shots, cfg.imbalance, cfg.seed)
        else:
            self.train_images, self.counts = self.train_ds.train, np.bincount(self.train_ds.train.labels, minlength=k)
        self.groups = class_groups(self.counts) if cfg.imbalance is not None and cfg.imbalance < 1 else None
        self._features: dict[str, Any] = {}
        #: class means of the (normalised) training features, set by :meth:`results`
        self.train_means: torch.Tensor | None = None

    # --- features -------------------------------------------------------------------------
    def train_view_features(self) -> FeatureStore:
        """(N, views, E) training-view features, memory-mapped from the cache (batches are read from disk)."""
        if "train_views" not in self._features:
            self._features["train_views"] = self.cache.store(
                self.backbone, self.train_images, views=self.cfg.train.views, seed=self.cfg.seed, train=True,
                desc="train views")
        return self._features["train_views"]

    def train_centre_features(self) -> torch.Tensor:
        if "train_centre" not in self._features:
            self._features["train_centre"] = self.cache.features(self.backbone, self.train_images, desc="train")
        return self._features["train_centre"]

    def eval_sets(self) -> dict[str, EvalSet]:
        if "eval" not in self._features:
            out = {}
            for name, ds in self.eval_sets_ds.items():
                test = limit_per_class(ds.test, self.cfg.max_test_per_class, 0)
                feats = self.cache.features(self.backbone, test, desc=f"test {name}")
                out[name] = EvalSet(name, ds.classnames, feats, torch.as_tensor(test.labels), test)
            self._features["eval"] = out
        return self._features["eval"]

    def target_set(self, spec: str) -> EvalSet:
        """All test classes of another dataset (cross-dataset / domain-generalisation target);
        ``spec`` is a registered name, or ``name=ROOT`` for datasets that need a root."""
        name, _, root = spec.partition("=")
        ds = get_dataset(name, root or None, seed=0)
        test = limit_per_class(ds.test, self.cfg.max_test_per_class, 0)
        feats = self.cache.features(self.backbone, test, desc=f"target {name}")
        return EvalSet(spec, ds.classnames, feats, torch.as_tensor(test.labels), test)

    # --- method ---------------------------------------------------------------------------
    def build(self) -> PromptMethod:
        return build_method(self.cfg.method, self.backbone, self.train_ds.classnames, dict(self.cfg.method_options),
                            dataset_templates=self.train_ds.templates)

    def train_features_for(self, method: PromptMethod) -> torch.Tensor:
        """Centre-view training features as ``method`` sees them."""
        if method.frozen_image_encoder:
            return self.train_centre_features()
        return encode_with(method.encode_images, self.backbone, self.train_images)

    def regularizer(self, method_frozen: bool = True) -> NPTRegularizer | None:
        npt = self.cfg.npt
        if not npt.enabled:
            return None
        k, e = self.train_ds.num_classes, self.backbone.embed_dim
        reg = NPTRegularizer(npt, k, e).to(self.backbone.device)
        zs = zero_shot_classifier(self.backbone, self.train_ds.classnames, self.train_ds.templates)
        labels = torch.as_tensor(self.train_images.labels)
        if not method_frozen:  # trainable image features: a running average of the class means
            reg.setup(zero_shot_text=zs)
            return reg
        acc = NCAccumulator(k, e, normalize=npt.normalize)
        acc.update(self.train_centre_features(), labels)
        reg.setup(zero_shot_text=zs, image_class_means=acc.class_means().float().to(self.backbone.device))
        return reg

    # --- run ------------------------------------------------------------------------------
    def run(self, run_dir: Path | None = None, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(run_dir / "config.yaml", cfg)
        method = self.build()
        eval_sets = self.eval_sets()
        labels = torch.as_tensor(self.train_images.labels)
        log: list[dict[str, Any]] = []
        initial_text = method.text_features().detach().cpu()
        if method.trainable:
            if method.frozen_image_encoder:
                source: FeatureSource = CachedFeatures(self.train_view_features())
            else:
                source = PixelViews(self.backbone, self.train_images, cfg.train.views, cfg.seed)
            reg = self.regularizer(method.frozen_image_encoder)

            def on_epoch_end(epoch: int) -> dict[str, Any]:
                out: dict[str, Any] = {}
                if cfg.diagnostics:
                    t = method.text_features().detach().cpu()
                    out["nc_train"] = nc_diagnostics(self.train_features_for(method), labels, t)
                if cfg.train.eval_every and ((epoch + 1) % cfg.train.eval_every == 0):
                    for name, ev in eval_sets.items():
                        out[f"{name}_acc"] = evaluate(method, ev, diagnostics=False)["top1"]
                return out

            log = train(method, source, labels, cfg.train, run_dir, reg, on_epoch_end, resume, stop_after)
            if stop_after is not None and len(log) < cfg.train.epochs:
                return {"interrupted_at_epoch": len(log)}
        results = self.results(method, log, initial_text, time.perf_counter() - t0)
        if run_dir is not None:
            state = {k: v.contiguous() for k, v in method.prompt_state().items()}
            if state:
                atomic_write(run_dir / "prompt.safetensors", lambda p: save_file(state, str(p)))
            text = {"initial": initial_text.clone(), "final": method.text_features().detach().cpu().clone()}
            atomic_write(run_dir / "text_features.safetensors", lambda p: save_file(text, str(p)))
            if self.train_means is not None:  # computed once, by results()
                means = {"train_means": self.train_means.float().contiguous()}
                atomic_write(run_dir / "image_means.safetensors", lambda p: save_file(means, str(p)))
            write_json(run_dir / "results.json", results)
        return results

    def _train_report(self, method: PromptMethod, feats: torch.Tensor, labels: torch.Tensor,
                      initial_text: torch.Tensor) -> dict[str, Any]:
        preds, text = predict(method, feats)
        out: dict[str, Any] = {"top1": 100.0 * float((preds == labels.numpy()).mean())}
        if self.cfg.diagnostics:
            out["nc"] = nc_diagnostics(feats, labels, text, preds)
            out["nc_initial_text"] = nc_diagnostics(feats, labels, initial_text)
        return out

    def results(self, method: PromptMethod, log: list[dict[str, Any]], initial_text: torch.Tensor,
                seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        labels = torch.as_tensor(self.train_images.labels)
        train_feats = self.train_features_for(method) if self.uses_train else None
        train_means = None
        if cfg.diagnostics and train_feats is not None:
            acc = NCAccumulator(self.train_ds.num_classes, train_feats.shape[1])
            acc.update(train_feats, labels)
            train_means = acc.class_means()
        self.train_means = train_means
        res: dict[str, Any] = {
            "method": cfg.method, "npt": cfg.npt.enabled, "dataset": self.dataset.name, "model": cfg.model,
            "pretrained": self.backbone.weights_id, "protocol": cfg.protocol, "seed": cfg.seed, "shots": cfg.shots,
            "imbalance": cfg.imbalance, "train_counts": self.counts.tolist() if self.uses_train else None,
            "epochs_run": len(log),
            "seconds": round(seconds, 2),
        }
        if train_feats is not None:
            res["train"] = self._train_report(method, train_feats, labels, initial_text)
        for name, ev in self.eval_sets().items():
            groups = self.groups if name in ("all", "base") else None
            res[name] = evaluate(method, ev, groups, cfg.diagnostics,
                                 train_means if name in ("all", "base") else None)
        if cfg.protocol == "base2new":
            res["hm"] = harmonic_mean(res["base"]["top1"], res["new"]["top1"])
        if cfg.targets:
            res["targets"] = {name: evaluate(method, self.target_set(name), diagnostics=cfg.diagnostics)
                              for name in cfg.targets}
        if log:
            res["final_train_loss"] = log[-1]["loss"]
        return res


def run_experiment(cfg: RunConfig, run_dir: str | Path | None = None, **kw: Any) -> dict[str, Any]:
    """Build and run one experiment; the Python API behind ``ncprompt train``."""
    exp = Experiment(cfg)
    out = run_dir if run_dir is not None else cfg.output
    return exp.run(Path(out) if out else None, **kw)


def load_run(run_dir: str | Path) -> tuple[RunConfig, dict[str, torch.Tensor] | None]:
    """The config and learned prompts of a finished run folder."""
    from ncprompt.config import load_yaml

    d = Path(run_dir)
    if not (d / "config.yaml").is_file():
        raise DataError(f"{d} is not a run folder (no config.yaml); pass the --output folder of `ncprompt train`")
    cfg = RunConfig.from_dict(load_yaml(d / "config.yaml"))
    if (d / "prompt.safetensors").is_file():
        return cfg, load_file(str(d / "prompt.safetensors"))
    from ncprompt.engine.checkpoint import load_checkpoint

    ck = load_checkpoint(d)  # an unfinished run: its last complete epoch
    return cfg, ck["prompt"] if ck is not None else None
