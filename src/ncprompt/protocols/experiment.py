"""One run, end to end, on the one data path every method shares:

images -> image features (as the method sees them: cached frozen-tower features or its own live
encoding); class names -> prompts -> text features; both -> logits -> loss (+ NPT regularisers);
features -> accuracy and neural-collapse diagnostics (:mod:`ncprompt.engine.evaluation`).

Files written to the run folder (:class:`ncprompt.engine.run_folder.RunFolder`, locked and checked
against its recorded config first): config.yaml, train_config.json, metrics.jsonl (per epoch),
train.log, checkpoint/ (resumable), prompt.safetensors, text_features.safetensors,
image_means.safetensors, results.json (:class:`ncprompt.engine.results.RunResult`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ncprompt.backbones.openclip import Backbone, load_backbone
from ncprompt.collapse.regularizers import NPTRegularizer
from ncprompt.config import ConfigError, RunConfig, load_yaml
from ncprompt.config.setting import DATA_SEED_FOLLOWS
from ncprompt.data import DataError, DatasetSplits, LabeledImages, check_dataset_args, dataset_options, get_dataset
from ncprompt.data.cache import FeatureCache
from ncprompt.data.cache_key import content_digest, weights_digest
from ncprompt.data.class_split import choose_base_classes
from ncprompt.data.sampling import class_groups, restrict_classes, sample_train
from ncprompt.engine import distributed
from ncprompt.engine.evaluation import EvalSet, class_means, evaluate, evaluate_features, nc_diagnostics, predict
from ncprompt.engine.progress import ProgressLog, epoch_number
from ncprompt.engine.results import RunResult, SplitResult, write_results
from ncprompt.engine.run_folder import PORTABLE, RunFolder, RunFolderError
from ncprompt.engine.run_header import environment, header_lines, small_image_warning
from ncprompt.engine.run_info import run_info
from ncprompt.engine.tracking import Tracker, check_available
from ncprompt.engine.trainer import train
from ncprompt.methods import build_method
from ncprompt.methods.base import MethodConfigError, MethodContext, PromptMethod
from ncprompt.methods.zeroshot import zero_shot_classifier
from ncprompt.metrics.neural_collapse import NCAccumulator
from ncprompt.utils import atomic_write, seed_everything

__all__ = ["EvalSet", "Experiment", "evaluate", "limit_per_class", "load_run", "nc_diagnostics", "predict",
           "run_experiment"]


def limit_per_class(split: LabeledImages, max_per_class: int | None, seed: int) -> LabeledImages:
    if not max_per_class:
        return split
    rng = np.random.default_rng(seed + 7919)
    keep = []
    for k in np.unique(split.labels):
        idx = np.flatnonzero(split.labels == k)
        keep.append(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False))
    return split.subset(np.sort(np.concatenate(keep)))


def check_device(device: str | None) -> None:
    """Refuse a CUDA device torch cannot see, before anything is loaded."""
    if device and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {device} requested but torch sees no CUDA GPU; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {device} does not exist ({torch.cuda.device_count()} GPU(s) visible); "
                              "use cuda:0")


class Experiment:
    """Prepares the data path for a :class:`RunConfig` and runs training + evaluation."""

    def __init__(self, cfg: RunConfig, backbone: Backbone | None = None, dataset: DatasetSplits | None = None) -> None:
        self.cfg = cfg
        run, data = cfg.run, cfg.data
        if run.threads is not None:  # pinned (the default follows the machine's load: cli.default_threads)
            torch.set_num_threads(run.threads)
        check_available(cfg.train.report_to)  # a tracker's missing package: refused before anything loads
        seed_everything(cfg.seed)
        if dataset is None:  # a root or option the dataset would ignore: refused before the model loads
            check_dataset_args(data.dataset, data.root, data.options)
        if backbone is None:
            check_device(run.device)
            backbone = load_backbone(run.model, run.pretrained, run.device, run.precision)
        if not cfg.train.coop_views:  # else the backbone's own training views (CoOp's crop and flip)
            backbone = backbone.with_augmentation(cfg.train.crop_min, cfg.train.flip)
        self.backbone = backbone
        if dataset is None:
            dataset = get_dataset(data.dataset, data.root, **dataset_options(data.dataset, data.options, cfg.seed))
        self.dataset = dataset
        #: under torchrun the ranks share the encoding of missing cache shards (rank 0 writes)
        self.cache = distributed.attach_cache(FeatureCache(run.cache_dir, enabled=run.use_cache,
                                                                  workers=data.workers))
        self.base_new = None
        if data.protocol == "base2new":
            base, new = self.base_new = choose_base_classes(dataset.classnames, data.base_classes)
            self.train_ds = restrict_classes(dataset, base, "base")
            self.eval_sets_ds = {"base": self.train_ds, "new": restrict_classes(dataset, new, "new")}
        else:
            self.train_ds = dataset
            self.eval_sets_ds = {"all": dataset}
        k = self.train_ds.num_classes
        self.train_images, self.counts = sample_train(self.train_ds.train, k, data.shots, data.imbalance, cfg.seed)
        self.groups = class_groups(self.counts) if data.imbalance is not None and data.imbalance < 1 else None
        # targets are resolved now, so a bad one is refused before any training
        self.targets = {spec: self._target_dataset(spec, cfg.seed) for spec in data.targets}
        if data.eval_split == "val":  # refused now, not after training
            for ds in (dataset, *self.targets.values()):
                if ds.val is None or len(ds.val) == 0:
                    raise DataError(f"dataset {ds.name!r} has no validation split to score; "
                                    "use data.eval_split=test (or a dataset with a val split)")
        #: class means of the (normalised) training features, set by :meth:`evaluate_all`
        self.train_means: torch.Tensor | None = None
        self._inputs: dict[str, str] | None = None  # :meth:`inputs`, computed once
        self.method: PromptMethod | None = None  # set by :meth:`run` once trained

    @staticmethod
    def _target_dataset(spec: str, run_seed: int) -> DatasetSplits:
        name, _, root = spec.partition("=")
        try:
            return get_dataset(name, root or None, **dataset_options(name, {}, run_seed))
        except DataError as e:
            raise DataError(f"data.targets {spec!r}: {e}") from None

    # --- sets -------------------------------------------------------------------------------
    def _scored(self, ds: DatasetSplits) -> LabeledImages:
        """The split of ``ds`` that is scored (``data.eval_split``), capped at ``data.max_test_per_class``."""
        return limit_per_class(ds.split(self.cfg.data.eval_split), self.cfg.data.max_test_per_class, 0)

    def eval_sets(self) -> dict[str, EvalSet]:
        """The scored splits (test, or val under ``data.eval_split=val``): ``all``, or ``base`` and ``new``."""
        return {name: EvalSet(name, ds.classnames, self._scored(ds)) for name, ds in self.eval_sets_ds.items()}

    def target_sets(self) -> dict[str, EvalSet]:
        """All classes of each target dataset, on the scored split (cross-dataset / domain generalisation)."""
        return {spec: EvalSet(spec, ds.classnames, self._scored(ds)) for spec, ds in self.targets.items()}

    # --- method -----------------------------------------------------------------------------
    def context(self) -> MethodContext:
        return MethodContext(self.backbone, list(self.train_ds.classnames), list(self.train_ds.templates),
                             dataset=self.cfg.data.dataset, shared_prefix=self.cfg.train.shared_prefix)

    def build(self) -> PromptMethod:
        return build_method(self.cfg.method, self.context())

    def regularizer(self, method: PromptMethod) -> NPTRegularizer | None:
        """The NPT hook: fixed image class means when the method's training features do not change,
        a running average otherwise."""
        npt = self.cfg.npt
        if not npt.enabled:
            return None
        k, e = self.train_ds.num_classes, self.backbone.embed_dim
        reg = NPTRegularizer(npt, k, e).to(self.backbone.device)
        zs = zero_shot_classifier(self.backbone, self.train_ds.classnames, self.train_ds.templates)
        fixed = method.fixed_image_features(self.train_images, self.cache)
        if fixed is None:
            reg.setup(zero_shot_text=zs)
            return reg
        acc = NCAccumulator(k, e, normalize=npt.normalize)
        acc.update(fixed, torch.as_tensor(self.train_images.labels))
        reg.setup(zero_shot_text=zs, image_class_means=acc.class_means().float().to(self.backbone.device))
        return reg

    def inputs(self) -> dict[str, str]:
        """What the run reads beyond its config, as digests (recorded in the run folder's inputs.json and
        checked before a run is resumed or reused): the weights' content, the dataset's class names and
        templates, the sampled training images, every test split and target (labels and pixels or files;
        :func:`ncprompt.data.cache_key.content_digest`), and ``portable.``-prefixed digests of the training
        images and test splits that do not depend on where the dataset lies (``eval --root NEW`` checks a moved
        dataset against them). Computed once: the grid checks them before a cell runs, and :meth:`run` records
        them."""
        if self._inputs is not None:
            return dict(self._inputs)
        out = {"weights": weights_input(self.backbone),
               "classes": classes_input(self.dataset.classnames, self.dataset.templates),
               "data.train": content_digest(self.train_images)[:16],
               PORTABLE + "data.train": content_digest(self.train_images, portable=True)[:16]}
        data = self.cfg.data
        if "seed" not in data.options and "seed" in dataset_options(data.dataset, data.options, self.cfg.seed):
            out["data.seed"] = DATA_SEED_FOLLOWS  # its images are drawn from the run's seed: the seed's
        for prefix, sets in (("data.test.", self.eval_sets()), ("data.target.", self.target_sets())):
            out.update({prefix + name: content_digest(ev.images)[:16] for name, ev in sets.items()})
        out.update({f"{PORTABLE}data.test.{name}": content_digest(ev.images, portable=True)[:16]
                    for name, ev in self.eval_sets().items()})
        self._inputs = out
        return dict(out)

    # --- run --------------------------------------------------------------------------------
    def run(self, run_dir: str | Path | None = None, resume: bool = True, stop_after: int | None = None,
            folder: RunFolder | None = None) -> RunResult | dict[str, Any]:
        """Train (when the method trains) and evaluate; with ``run_dir`` (or an already locked
        ``folder``), lock it, check it against its recorded config and write the run's files.
        ``stop_after`` (tests): stop after that many epochs and return ``{"interrupted_at_epoch": n}``."""
        if run_dir is None and folder is None:
            return self._run(None, resume, stop_after)
        folder = folder if folder is not None else RunFolder(run_dir)  # type: ignore[arg-type]
        if not distributed.is_main():  # under torchrun rank 0 locks, prepares and writes the folder
            distributed.barrier()
            return self._run(folder.path, resume, stop_after)
        owned = not folder.locked
        if owned:
            folder.acquire()
        try:
            folder.prepare(self.cfg, resume, self.inputs())
            distributed.barrier()  # the other ranks read the folder once it is prepared
            return self._run(folder.path, resume, stop_after)
        finally:
            if owned:
                folder.release()

    def _log(self, run_dir: Path | None, lines: list[str], echo: bool = False) -> None:
        """Append ``lines`` to run_dir/train.log (rank 0 only); ``echo``: as stamped notes, on stderr too."""
        if not distributed.is_main():
            return
        log_file = run_dir / "train.log" if run_dir is not None else None
        if echo:
            plog = ProgressLog("run", 0, log_file, bars=False)
            for line in lines:
                plog.note(line)
        elif log_file is not None:
            with open(log_file, "a") as f:
                f.writelines(line + "\n" for line in lines)

    def _run(self, run_dir: Path | None, resume: bool, stop_after: int | None) -> RunResult | dict[str, Any]:
        """:meth:`_train_and_evaluate`, recorded by the ``train.report_to`` trackers (main rank)."""
        tracker = Tracker.for_run(self.cfg, run_dir, self.dataset.name) if distributed.is_main() else Tracker([])
        try:
            result = self._train_and_evaluate(run_dir, resume, stop_after, tracker)
        except BaseException:
            tracker.close(failed=True)
            raise
        if isinstance(result, RunResult):
            tracker.log_results(result)
        tracker.close()
        return result

    def _train_and_evaluate(self, run_dir: Path | None, resume: bool, stop_after: int | None,
                            tracker: Tracker) -> RunResult | dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        if run_dir is not None and distributed.is_main():  # what ran, for a train.log read on its own
            weights = self.inputs()["weights"]
            self._log(run_dir, header_lines(environment(self.backbone), self.info(), weights, cfg.method.name))
        method = self.build()
        labels = torch.as_tensor(self.train_images.labels)
        initial_text = method.text_features().detach().cpu()
        initial_new = self.new_class_text(method)  # before training: the hand-written prompt on the new classes
        source = method.training_source(self.train_images, cfg.train.views, cfg.seed, self.cache)
        log: list[dict[str, Any]] = []
        if source is not None:
            sample = [self.train_images.load(i).size for i in range(min(8, len(self.train_images)))]
            small = small_image_warning(sample, cfg.train.crop_min, cfg.train.flip) if cfg.train.views > 0 else None
            if small:
                self._log(run_dir, [small], echo=True)
            eval_sets = self.eval_sets()

            def on_epoch_end(epoch: int) -> dict[str, Any]:
                out: dict[str, Any] = {}
                if cfg.run.diagnostics:
                    t = method.text_features().detach().cpu()
                    out["nc_train"] = nc_diagnostics(method.image_features(self.train_images, self.cache), labels, t)
                if cfg.train.eval_every and ((epoch + 1) % cfg.train.eval_every == 0):
                    for name, ev in eval_sets.items():
                        out[f"{name}_acc"] = evaluate(method, ev, self.cache, diagnostics=False).top1
                return out

            log = train(method, source, labels, cfg.train, run_dir, self.regularizer(method), on_epoch_end,
                        resume, stop_after, on_record=tracker.log_epoch if tracker else None)
            done = epoch_number(log[-1]) if log else 0  # the last record is always of an epoch run by this call
            if stop_after is not None and done < cfg.train.epochs:
                return {"interrupted_at_epoch": done}
        #: the trained method (to score it on another split: ``Experiment(cfg_val, ...).evaluate_all(exp.method)``)
        self.method = method
        result = self.evaluate_all(method, initial_text, trained=method.trainable)
        # a finished training loop ran every epoch (a resumed one partly before), whatever records metrics.jsonl
        # kept; the last loss only when its epoch's record is there
        result.epochs_run = cfg.train.epochs if source is not None else 0
        last = log[-1] if log and epoch_number(log[-1]) == cfg.train.epochs else None
        result.final_train_loss = last["loss"] if last is not None else None
        result.seconds = round(time.perf_counter() - t0, 2)
        if run_dir is not None and distributed.is_main():
            self.write(run_dir, method, initial_text, result, initial_new)
            self._log(run_dir, [f"results ({result.seconds:.1f} s): {result.summary_line()}"])
        return result

    def evaluate_all(self, method: PromptMethod, initial_text: torch.Tensor | None = None, trained: bool = True,
                     train_means: torch.Tensor | None = None) -> RunResult:
        """Every split (train, test splits, targets) of ``method``: the one evaluation of ``train`` and
        ``eval``. NC4 of the base/all split uses the training class means (given, or computed here)."""
        cfg = self.cfg
        labels = torch.as_tensor(self.train_images.labels)
        train_split: SplitResult | None = None
        if trained or cfg.data.shots:  # shots 0 without training: the whole training set is not encoded
            feats = method.image_features(self.train_images, self.cache, desc="train")
            if train_means is None and cfg.run.diagnostics:
                train_means = class_means(feats, labels, self.train_ds.num_classes)
            train_split = evaluate_features(method, feats, labels, self.train_ds.classnames,
                                            diagnostics=cfg.run.diagnostics, initial_text=initial_text)
        self.train_means = train_means
        splits = {}
        for name, ev in self.eval_sets().items():
            own = name in ("all", "base")
            splits[name] = evaluate(method, ev, self.cache, self.groups if own else None, cfg.run.diagnostics,
                                    train_means if own else None)
        targets = {name: evaluate(method, ev, self.cache, diagnostics=cfg.run.diagnostics)
                   for name, ev in self.target_sets().items()}
        return RunResult(
            method=cfg.method.name, npt=cfg.npt.enabled, dataset=self.dataset.name, model=cfg.run.model,
            pretrained=self.backbone.weights_id, protocol=cfg.data.protocol, seed=cfg.seed, shots=cfg.data.shots,
            imbalance=cfg.data.imbalance, train_counts=self.counts.tolist(), splits=splits, train=train_split,
            targets=targets, fingerprint=cfg.fingerprint(), info=self.info(), config=cfg.to_dict(),
            environment=environment(self.backbone))

    def info(self) -> dict[str, Any]:
        """results.json's ``info``: the model and weights that ran, class names of every split and group, sizes."""
        base, new = self.base_new if self.base_new is not None else (None, None)
        return run_info(self.backbone, self.dataset.classnames, requested_model=self.cfg.run.model, base=base,
                        new=new, counts=self.counts, groups=self.groups, train_n=len(self.train_images),
                        test_sizes={k: len(v.images) for k, v in self.eval_sets().items()},
                        target_sizes={k: len(v.images) for k, v in self.target_sets().items()},
                        dataset_name=self.dataset.name, dataset_kind=self.cfg.data.dataset, root=self.cfg.data.root,
                        templates=self.dataset.templates, scored=self.cfg.data.eval_split)

    def new_class_text(self, method: PromptMethod) -> torch.Tensor | None:
        """Text features of the new classes (base-to-new) under ``method``'s current prompts; None without
        new classes or when the method cannot score other classes (linear probe, class-specific context)."""
        if "new" not in self.eval_sets_ds:
            return None
        try:
            m = method.for_classnames(list(self.eval_sets_ds["new"].classnames))
        except MethodConfigError:
            return None
        with torch.no_grad():
            return m.text_features().detach().float().cpu().contiguous()

    def new_class_means(self, method: PromptMethod) -> torch.Tensor | None:
        """Class means of the new split's L2-normalised test features, in the new split's class order (None when
        a new class has no test image)."""
        ev = self.eval_sets().get("new")
        if ev is None:
            return None
        try:
            m = method.for_classnames(ev.classnames)
        except MethodConfigError:
            return None
        with torch.no_grad():
            feats = m.image_features(ev.images, self.cache, desc="test new (class means)")
        labels, k = torch.as_tensor(ev.labels), len(ev.classnames)
        counts = torch.bincount(labels, minlength=k)
        if bool((counts == 0).any()):
            return None
        f = torch.nn.functional.normalize(feats.double(), dim=-1)
        sums = torch.zeros(k, f.shape[1], dtype=torch.float64).index_add_(0, labels, f)
        return (sums / counts[:, None]).float().contiguous()

    def write(self, run_dir: Path, method: PromptMethod, initial_text: torch.Tensor, result: RunResult,
              initial_new: torch.Tensor | None = None) -> None:
        """prompt.safetensors, text_features.safetensors (``initial``/``final`` of the training classes, and
        ``initial_new``/``final_new`` of the new classes under base-to-new), image_means.safetensors
        (``train_means``, and ``test_means_new``: the new split's test class means) and results.json (last)."""
        state = {k: v.contiguous() for k, v in method.prompt_state().items()}
        if state:
            atomic_write(run_dir / "prompt.safetensors", lambda p: save_file(state, str(p)))
        text = {"initial": initial_text.clone(), "final": method.text_features().detach().cpu().clone()}
        final_new = self.new_class_text(method) if initial_new is not None else None
        if initial_new is not None and final_new is not None:
            text.update(initial_new=initial_new.clone(), final_new=final_new)
        atomic_write(run_dir / "text_features.safetensors", lambda p: save_file(text, str(p)))
        if self.train_means is not None:
            means = {"train_means": self.train_means.float().contiguous()}
            new_means = self.new_class_means(method) if final_new is not None else None
            if new_means is not None:
                means["test_means_new"] = new_means
            atomic_write(run_dir / "image_means.safetensors", lambda p: save_file(means, str(p)))
        write_results(run_dir / "results.json", result)


def run_experiment(cfg: RunConfig, out_dir: str | Path | None = None, backbone: Backbone | None = None,
                   resume: bool = True) -> RunResult:
    """Build and run one experiment (the Python API behind ``ncprompt train``); ``out_dir`` defaults to
    ``cfg.run.output`` (None: nothing written)."""
    out = out_dir if out_dir is not None else cfg.run.output
    result = Experiment(cfg, backbone=backbone).run(Path(out) if out else None, resume=resume)
    assert isinstance(result, RunResult)
    return result


def weights_input(backbone: Backbone) -> str:
    """inputs.json's ``weights``: the weights' name or file and a digest of their content."""
    return f"{backbone.weights_id} sha256:{weights_digest(backbone.model)[:16]}"


def classes_input(classnames: Sequence[str], templates: Sequence[str]) -> str:
    """inputs.json's ``classes``: a digest of the class names and the prompt templates."""
    return hashlib.sha256(json.dumps([list(classnames), list(templates)]).encode()).hexdigest()[:16]


def read_prompt_file(f: Path) -> dict[str, torch.Tensor]:
    """A run's ``prompt.safetensors``; a damaged file is one :class:`RunFolderError` line."""
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunFolderError(f"{f} is damaged ({e}); retrain the run (ncprompt train --no-resume)") from None


def load_run(run_dir: str | Path) -> tuple[RunConfig, dict[str, torch.Tensor] | None]:
    """The config and learned prompts of a run folder (an unfinished one: its last checkpoint)."""
    d = Path(run_dir)
    if not (d / "config.yaml").is_file():
        raise RunFolderError(f"{d} is not a run folder (no config.yaml); pass the --output folder of `ncprompt train`")
    cfg = RunConfig.from_dict(load_yaml(d / "config.yaml"), where=str(d / "config.yaml"))
    if (d / "prompt.safetensors").is_file():
        return cfg, read_prompt_file(d / "prompt.safetensors")
    from ncprompt.engine.checkpoint import load_checkpoint

    ck = load_checkpoint(d, cfg.train.epochs)
    return cfg, ck["prompt"] if ck is not None else None


def load_train_means(run_dir: str | Path) -> torch.Tensor | None:
    """The training class means a run recorded (so ``eval`` computes NC4 as training did)."""
    f = Path(run_dir) / "image_means.safetensors"
    return load_file(str(f))["train_means"] if f.is_file() else None
