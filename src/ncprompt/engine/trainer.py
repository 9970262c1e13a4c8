"""The training loop shared by every method, on cached (or live) image features.

Per step: image features f (B, E) of the sampled views -> method -> logits + text features ->
L = L_base + [NPT: lambda_LC L_LC + lambda_MI L_MI] -> SGD step. Schedule (CoOp's): the first
W = min(``warmup_epochs``, E - 1) epochs at the constant ``warmup_lr`` (a warm-up as long as the run
is clipped, with a note), then lr(e) = lr * (1 + cos(pi e / E)) / 2. Batches: the last partial batch
is dropped (as Dassl) only when at least ``MIN_FULL_BATCHES`` full batches remain, so a few-shot set
never trains on a single step per epoch; runs of fewer than ``FEW_STEPS`` steps in all are warned
about. Progress: one line per epoch in run_dir/train.log, on stderr too (a bar on a terminal).
Every epoch's order and view choice come from a generator seeded with (seed, epoch), so a run
resumed from its last checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ncprompt.data.cache import FeatureSource
from ncprompt.engine.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
from ncprompt.engine.progress import ProgressLog, epoch_line
from ncprompt.methods.base import MethodOutput, PromptMethod
from ncprompt.utils import append_jsonl, read_jsonl, write_json

#: keep the last partial batch unless this many full batches remain (few-shot sets: more steps)
MIN_FULL_BATCHES = 4
#: a run with fewer optimiser steps than this in all gets a warning
FEW_STEPS = 50


class TrainConfigError(ValueError):
    pass


@dataclass
class TrainConfig:
    """Optimisation settings (CoOp's published defaults)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.002
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    views: int = 8
    eval_every: int = 0
    seed: int = 1
    checkpoint_every: int = 1
    max_grad_norm: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.optimizer in ("sgd", "adamw"), f"optimizer must be sgd or adamw, got {self.optimizer!r}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (self.views >= 1, f"views must be >= 1, got {self.views}"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise TrainConfigError(msg)


def effective_warmup(cfg: TrainConfig) -> int:
    """Warm-up epochs actually used: at most E - 1, so at least one epoch runs at the real lr."""
    return max(0, min(cfg.warmup_epochs, cfg.epochs - 1))


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: constant warm-up, then cosine over all epochs."""
    if epoch < effective_warmup(cfg):
        return cfg.warmup_lr
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_order(n: int, views: int, batch_size: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample order and view choice of one epoch; the last partial batch is dropped (as Dassl)
    only when at least ``MIN_FULL_BATCHES`` full batches remain."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g)
    view = torch.randint(views, (n,), generator=g)
    if n // batch_size >= MIN_FULL_BATCHES:
        keep = (n // batch_size) * batch_size
        order, view = order[:keep], view[:keep]
    return order, view


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps of one epoch over ``n`` samples (see :func:`epoch_order`)."""
    full, rest = divmod(n, batch_size)
    return full if full >= MIN_FULL_BATCHES else full + (rest > 0)


def few_steps_warning(n: int, cfg: TrainConfig) -> str | None:
    """A warning when the whole run takes fewer than ``FEW_STEPS`` optimiser steps, else None."""
    per = steps_per_epoch(n, cfg.batch_size)
    total = per * cfg.epochs
    if total >= FEW_STEPS:
        return None
    return (f"warning: this run takes only {total} optimiser steps in all ({cfg.epochs} epochs x {per} steps of "
            f"batch {cfg.batch_size} over {n} training images); prompts may barely move. Raise --epochs or "
            f"lower --batch-size (>= {FEW_STEPS} steps recommended)")


def train_step(method: PromptMethod, inputs: torch.Tensor, labels: torch.Tensor, opt: torch.optim.Optimizer,
               regularizer: torch.nn.Module | None = None, max_grad_norm: float = 0.0,
               ) -> tuple[MethodOutput, dict[str, torch.Tensor], torch.Tensor]:
    """One optimisation step: L = sum of the method's loss terms + the NPT hook's "loss"; returns
    the method output, every loss part (NPT parts as ``npt_*``, logged only) and L."""
    out = method(inputs)
    parts = method.base_loss(out, labels)
    if regularizer is not None:
        img = out.image_features if out.image_features is not None else inputs
        reg = regularizer(out.text_features, img, labels)
        parts.update({f"npt_{k}": v for k, v in reg.items() if k != "loss"})
        parts["npt"] = reg["loss"]
    loss = sum(v for k, v in parts.items() if k == "npt" or not k.startswith("npt_"))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        params = [p for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    return out, parts, loss


def train(
    method: PromptMethod,
    source: FeatureSource,
    labels: torch.Tensor,
    cfg: TrainConfig,
    run_dir: Path | None = None,
    regularizer: torch.nn.Module | None = None,
    on_epoch_end: Callable[[int], dict[str, Any]] | None = None,
    resume: bool = True,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    """Train ``method``'s prompts; returns the per-epoch log (also written to run_dir/metrics.jsonl).

    Args:
        source: image features of training views, by (index, view).
        regularizer: the NPT hook, called as ``regularizer(text_features, image_features, labels)``
            and returning a dict with a "loss" entry (and its parts, logged).
        on_epoch_end: extra metrics (e.g. validation accuracy, NC diagnostics) for epoch e.
        stop_after: stop after this many epochs of this call (to simulate an interruption).
    """
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise TrainConfigError(f"method {method.name!r} has nothing to train")
    opt = make_optimizer(params, cfg)
    device = params[0].device
    labels = labels.long()
    n = len(labels)
    start = 0
    log: list[dict[str, Any]] = []
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        ck = load_checkpoint(run_dir) if resume else None
        if ck is not None:
            method.load_prompt_state(ck["prompt"])
            restore_optimizer(opt, ck["optim"], ck["optim_scalars"])
            if regularizer is not None and ck["extra"]:
                regularizer.load_state_dict({**regularizer.state_dict(), **ck["extra"]})
            start = ck["epoch"] + 1
            log = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("epoch", -1) < start]
        write_json(run_dir / "train_config.json", asdict(cfg))
        _rewrite_log(run_dir / "metrics.jsonl", log)
    method.train()
    if regularizer is not None:
        regularizer.train()
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    plog = ProgressLog(f"train {method.name}", cfg.epochs, run_dir / "train.log" if run_dir else None, done=start)
    if start:
        plog.note(f"resuming from epoch {start + 1}/{cfg.epochs} ({start} epochs done, checkpoint in {run_dir})")
    else:
        warn = few_steps_warning(n, cfg)
        if warn:
            plog.note(warn)
        if cfg.warmup_epochs > effective_warmup(cfg):
            plog.note(f"note: warm-up clipped to {effective_warmup(cfg)} epoch(s): train.warmup_epochs "
                      f"{cfg.warmup_epochs} >= epochs {cfg.epochs}")
    try:
        for epoch in range(start, end):
            t0 = time.perf_counter()
            lr = lr_at(cfg, epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            order, views = epoch_order(n, source.num_views, cfg.batch_size, cfg.seed, epoch)
            sums: dict[str, float] = {}
            correct = seen = steps = 0
            for s in range(0, len(order), cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                feats = source(idx, views[s : s + cfg.batch_size]).to(device)
                y = labels[idx].to(device)
                out, parts, loss = train_step(method, feats, y, opt, regularizer, cfg.max_grad_norm)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                correct += int((out.logits.argmax(-1) == y).sum())
                seen += len(y)
                steps += 1
            record: dict[str, Any] = {"epoch": epoch, "lr": lr, "steps": steps,
                                      "train_acc": 100.0 * correct / max(seen, 1),
                                      **{k: v / max(steps, 1) for k, v in sums.items()},
                                      "epoch_time_s": time.perf_counter() - t0}
            if on_epoch_end is not None:
                method.eval()
                with torch.no_grad():
                    record.update(on_epoch_end(epoch))
                method.train()
            log.append(record)
            if run_dir is not None:
                append_jsonl(run_dir / "metrics.jsonl", record)
                if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                    extra = {k: v.detach().cpu() for k, v in regularizer.state_dict().items()} if regularizer else {}
                    save_checkpoint(run_dir, epoch, method.prompt_state(), opt, extra)
            plog.step(epoch_line(record, cfg.epochs), loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.1f}")
    except KeyboardInterrupt:
        saved = load_checkpoint(run_dir) if run_dir is not None else None
        kept = f"{saved['epoch'] + 1} epochs saved in {run_dir}; run the same command again to resume" if saved \
            else "nothing saved"
        plog.note(f"interrupted (Ctrl-C): {kept}")
        plog.close()
        raise
    plog.close()
    method.eval()
    return log


def _rewrite_log(path: Path, records: list[dict[str, Any]]) -> None:
    import json

    from ncprompt.utils import atomic_write

    atomic_write(path, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in records)))
