"""The training loop shared by every method, on cached (or live) image features.

Per step: image features f (B, E) of the sampled views -> method -> logits + text features ->
L = L_base + [NPT: lambda_LC L_LC + lambda_MI L_MI] -> SGD step. Schedule (CoOp's): the first
W = min(``warmup_epochs``, E - 1) epochs at the constant ``warmup_lr`` (a warm-up as long as the run
is clipped, with a note), then lr(e) = lr * (1 + cos(pi (e - W) / E)) / 2 for e >= W: Dassl's
ConstantWarmupScheduler around CosineAnnealingLR(T_max=E) with WARMUP_RECOUNT, which restarts the
cosine after the warm-up, so epoch W trains at the full lr. A non-finite loss (or parameters) stops
training at once with a :class:`NonFiniteError` naming the epoch and step; nothing of that epoch is
written and the last good checkpoint stays. Batches: the last partial batch
is dropped (as Dassl) only when at least ``MIN_FULL_BATCHES`` full batches remain, so a few-shot set
never trains on a single step per epoch; runs of fewer than ``FEW_STEPS`` steps in all are warned
about. Progress: one line per epoch in run_dir/train.log, on stderr too (a bar on a terminal).
Every epoch's order and view choice come from a generator seeded with (seed, epoch), so a run
resumed from its last checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ncprompt.config.run import TrainConfig  # the typed config tree
from ncprompt.data.cache import FeatureSource
from ncprompt.engine import distributed
from ncprompt.engine.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
from ncprompt.engine.progress import ProgressLog, epoch_line, epoch_number
from ncprompt.methods.base import MethodOutput, PromptMethod
from ncprompt.utils import (
    append_jsonl,
    cosine_decay,
    first_nonfinite,
    read_jsonl,
    sweep_tmp,
    write_json,
    write_jsonl,
)

#: keep the last partial batch unless this many full batches remain (few-shot sets: more steps)
MIN_FULL_BATCHES = 4
#: a run with fewer optimiser steps than this in all gets a warning
FEW_STEPS = 50


class TrainConfigError(ValueError):
    pass


class NonFiniteError(TrainConfigError):
    """Training diverged: a non-finite loss, or non-finite parameters after a step."""


def effective_warmup(cfg: TrainConfig) -> int:
    """Warm-up epochs actually used: at most E - 1, so at least one epoch runs at the real lr."""
    return max(0, min(cfg.warmup_epochs, cfg.epochs - 1))


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: ``warmup_lr`` for e < W, then lr (1 + cos(pi (e - W) / E)) / 2
    (CoOp/Dassl: the cosine over E epochs restarts after the W warm-up epochs)."""
    w = effective_warmup(cfg)
    if epoch < w:
        return cfg.warmup_lr
    return cosine_decay(cfg.lr, epoch - w, cfg.epochs)


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum, Adam (weight decay as an L2 term in the gradient) or AdamW (decoupled), as Dassl builds
    them (Adam's betas (0.9, 0.999): Dassl's defaults and torch's)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
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


def resumed_log(records: list[dict[str, Any]], start: int, epochs: int, notes: list[str]) -> list[dict[str, Any]]:
    """The metrics records of epochs 1 .. ``start`` that a checkpoint of ``start`` epochs continues (counted from
    1, :func:`~ncprompt.engine.progress.epoch_number`; the last record of an epoch written twice); appends a
    warning to ``notes`` when some are missing (lost or edited): the run goes on, and the number of epochs run
    comes from the checkpoint, not from the log."""
    by_epoch = {epoch_number(r): r for r in records
                if isinstance(r.get("epoch"), int) and not isinstance(r["epoch"], bool)
                and 1 <= epoch_number(r) <= start}
    missing = [e for e in range(1, start + 1) if e not in by_epoch]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        notes.append(f"warning: metrics.jsonl lacks the record of epoch(s) {shown} of the {start} epochs the "
                     "checkpoint holds (lost or edited); training goes on from the checkpoint and the log keeps "
                     "the gap")
    return [{**by_epoch[e], "epoch": e, "epochs": epochs} for e in sorted(by_epoch)]


def train_step(method: PromptMethod, inputs: torch.Tensor, labels: torch.Tensor, opt: torch.optim.Optimizer,
               regularizer: torch.nn.Module | None = None, max_grad_norm: float = 0.0, check_finite: bool = True,
               forward: Callable[[torch.Tensor], MethodOutput] | None = None, loss_scale: float = 1.0,
               scaler: torch.amp.GradScaler | None = None,
               ) -> tuple[MethodOutput, dict[str, torch.Tensor], torch.Tensor]:
    """One optimisation step: L = sum of the method's loss terms + the NPT hook's "loss"; returns
    the method output, every loss part (NPT parts as ``npt_*``, logged only) and L.

    With ``check_finite`` a non-finite L raises :class:`NonFiniteError` before the step (the
    parameters stay as they were), and so do non-finite parameters after it. ``forward`` replaces
    ``method`` for the forward pass (its DistributedDataParallel wrapper); the gradient is that of
    ``loss_scale`` * L (a rank's share of the global batch, :mod:`ncprompt.engine.distributed`). An enabled
    ``scaler`` (fp16) multiplies every part by its scale S before the method's backward, unscales the gradients
    (1/S) before clipping and skips a step whose gradients overflowed (``torch.amp.GradScaler``)."""
    out = (forward or method)(inputs)
    parts = method.base_loss(out, labels)
    if regularizer is not None:
        img = out.image_features if out.image_features is not None else inputs
        reg = regularizer(out.text_features, img, labels)
        parts.update({f"npt_{k}": v for k, v in reg.items() if k != "loss"})
        parts["npt"] = reg["loss"]
    loss = sum(v for k, v in parts.items() if k == "npt" or not k.startswith("npt_"))
    if check_finite and not bool(torch.isfinite(loss.detach())):
        bad = sorted(k for k, v in parts.items() if not bool(torch.isfinite(v.detach()).all()))
        raise NonFiniteError(f"the loss is {float(loss.detach())} (non-finite terms: {', '.join(bad)})")
    opt.zero_grad(set_to_none=True)
    scaled = scaler is not None and scaler.is_enabled()
    if loss_scale == 1.0 and not scaled:
        method.backward_step(parts, loss)
    else:  # every part scaled alike, so a method's own backward (ProGrad) stays exact
        def scale(v: torch.Tensor) -> torch.Tensor:
            return (scaler.scale(v) if scaled else v) * loss_scale
        method.backward_step({k: scale(v) for k, v in parts.items()}, scale(loss))
    if scaled:
        scaler.unscale_(opt)
    if max_grad_norm > 0:
        params = [p for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaled:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if check_finite:
        params = [p for g in opt.param_groups for p in g["params"]]
        if not bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all()):
            raise NonFiniteError(
                f"the parameters hold NaN/inf after the optimiser step (loss {float(loss.detach()):.4g})")
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
    ddp: str | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``method``'s prompts; returns the per-epoch log (also written to run_dir/metrics.jsonl).

    Args:
        source: image features of training views, by (index, view).
        regularizer: the NPT hook, called as ``regularizer(text_features, image_features, labels)``
            and returning a dict with a "loss" entry (and its parts, logged).
        on_epoch_end: extra metrics (e.g. validation accuracy, NC diagnostics) for epoch e.
        stop_after: stop after this many epochs of this call (to simulate an interruption).
        ddp: under torchrun, "ddp" | "main" | "auto" (default; see :func:`distributed.train_mode`).
        on_record: called with each finished epoch's record on the main rank (experiment trackers).
    """
    mode = distributed.train_mode(method.ddp_auto, ddp)
    if mode == "main":  # rank 0 trains alone; every rank gets its prompts, buffers and log
        return distributed.run_on_main(lambda: train(method, source, labels, cfg, run_dir, regularizer, on_epoch_end,
                                                     resume, stop_after, on_record=on_record), [method, regularizer])
    main = distributed.is_main()
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise TrainConfigError(f"method {method.name!r} has nothing to train")
    opt = make_optimizer(params, cfg)
    scaler = method.backbone.grad_scaler()  # enabled under fp16 only
    device = params[0].device
    labels = labels.long()
    n = len(labels)
    start = 0
    log: list[dict[str, Any]] = []
    notes: list[str] = []  # warnings of the resume, shown and written to train.log once it is open
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if main:
            sweep_tmp(run_dir)  # left by atomic writes of a killed run (the folder is this run's alone)
        # every rank reads it: it holds no per-rank state
        ck = load_checkpoint(run_dir, cfg.epochs) if resume else None
        if ck is not None:
            method.load_prompt_state(ck["prompt"])
            restore_optimizer(opt, ck["optim"], ck["optim_scalars"], where=run_dir / "checkpoint")
            if regularizer is not None and ck["extra"]:
                regularizer.load_state_dict({**regularizer.state_dict(), **ck["extra"]})
            start = ck["epochs_done"]
            # records counted from 1 (earlier versions' 0-based ones renumbered as they are rewritten below)
            log = resumed_log(read_jsonl(run_dir / "metrics.jsonl", warn=notes.append), start, cfg.epochs, notes)
        if main:
            write_json(run_dir / "train_config.json", cfg.model_dump())
            write_jsonl(run_dir / "metrics.jsonl", log)
    model = distributed.wrap_ddp(method) if mode == "ddp" else method
    if mode == "ddp" and regularizer is not None:
        regularizer.batch_sum = distributed.sum_over_ranks  # EMA image means of the global batch
    method.train()
    if regularizer is not None:
        regularizer.train()
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    plog = ProgressLog(f"train {method.name}", cfg.epochs, run_dir / "train.log" if run_dir and main else None,
                       done=start)
    for note in notes:
        plog.note(note)
    if start >= cfg.epochs:
        plog.note(f"finished ({start}/{cfg.epochs} epochs, checkpoint in {run_dir}); re-evaluating")
    elif start:
        plog.note(f"resuming from epoch {start + 1}/{cfg.epochs} ({start} epochs done, checkpoint in {run_dir})")
    else:
        warn = few_steps_warning(n, cfg)
        if warn:
            plog.note(warn)
        if cfg.warmup_epochs > effective_warmup(cfg):
            plog.note(f"note: warm-up clipped to {effective_warmup(cfg)} epoch(s): train.warmup_epochs "
                      f"{cfg.warmup_epochs} >= epochs {cfg.epochs}")
        for line in method.notes():
            plog.note(line)
    try:
        for epoch in range(start, end):
            t0 = time.perf_counter()
            lr = lr_at(cfg, epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            order, views = epoch_order(n, source.num_views, cfg.batch_size, cfg.seed, epoch)
            sums: dict[str, float] = {}
            correct = seen = steps = 0
            plan = []
            for s in range(0, len(order), cfg.batch_size):
                idx, vw = order[s : s + cfg.batch_size], views[s : s + cfg.batch_size]
                share, w = distributed.batch_share(len(idx))  # this rank's slice; weight n_r / n
                # count: samples this rank stands for (a batch smaller than the world: n / W)
                plan.append((idx[share], vw[share], w, w * len(idx)))
            inputs = source.batches([(idx, vw) for idx, vw, _, _ in plan])  # loader workers may work ahead
            for (idx, _, w, count), x in zip(plan, inputs, strict=True):
                feats = x.to(device)
                y = labels[idx].to(device)
                try:
                    out, parts, loss = train_step(method, feats, y, opt, regularizer, cfg.max_grad_norm,
                                                  forward=model, loss_scale=w * distributed.world_size(),
                                                  scaler=scaler)
                except NonFiniteError as e:
                    raise NonFiniteError(_diverged(e, cfg, epoch, steps, run_dir)) from None
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + w * float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + w * float(loss.detach())
                correct += int((out.logits.argmax(-1) == y).sum()) * count / len(y)
                seen += count
                steps += 1
            method.end_epoch(epoch, cfg.epochs)
            if mode == "ddp":  # the global batch's means: sum_r w_r * (rank r's mean)
                sums = distributed.all_reduce_floats(sums)
                tally = distributed.all_reduce_floats({"correct": correct, "seen": seen})
                correct, seen = tally["correct"], tally["seen"]
            record: dict[str, Any] = {"epoch": epoch + 1, "epochs": cfg.epochs, "lr": lr, "steps": steps,
                                      "train_acc": 100.0 * correct / max(seen, 1),
                                      **{k: v / max(steps, 1) for k, v in sums.items()},
                                      "epoch_time_s": time.perf_counter() - t0}
            if on_epoch_end is not None:
                method.eval()
                with torch.no_grad():
                    record.update(on_epoch_end(epoch))
                method.train()
            bad = first_nonfinite(record)  # e.g. diagnostics of prompts that grew huge but finite
            if bad is not None:
                why = NonFiniteError(f"the epoch's metric {bad} is not finite")
                raise NonFiniteError(_diverged(why, cfg, epoch, max(steps - 1, 0), run_dir))
            log.append(record)
            if run_dir is not None and main:
                append_jsonl(run_dir / "metrics.jsonl", record)
                if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                    extra = {k: v.detach().cpu() for k, v in regularizer.state_dict().items()} if regularizer else {}
                    save_checkpoint(run_dir, epoch, method.prompt_state(), opt, extra)
            if on_record is not None and main:
                on_record(record)
            plog.step(epoch_line(record, cfg.epochs), loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.1f}")
    except KeyboardInterrupt:
        saved = load_checkpoint(run_dir) if run_dir is not None else None
        kept = f"{saved['epoch'] + 1} epochs saved in {run_dir}; run the same command again to resume" if saved \
            else "nothing saved"
        plog.note(f"interrupted (Ctrl-C): {kept}")
        plog.close()
        raise
    plog.close()
    if mode == "ddp" and regularizer is not None:
        regularizer.batch_sum = None
    method.eval()
    return log


def _diverged(e: NonFiniteError, cfg: TrainConfig, epoch: int, step: int, run_dir: Path | None) -> str:
    """The one-line message of a diverged run: where, what is kept, and the fix."""
    kept = "nothing of this epoch was written"
    if run_dir is not None:
        ck = load_checkpoint(run_dir)
        kept += f"; the last good checkpoint (epoch {ck['epoch'] + 1}) is kept" if ck else "; no checkpoint yet"
    return (f"training diverged at epoch {epoch + 1}/{cfg.epochs}, step {step + 1}: {e}; {kept}. "
            f"Lower the learning rate (--lr {cfg.lr:g} now, try {cfg.lr / 10:g}) or set train.max_grad_norm")
