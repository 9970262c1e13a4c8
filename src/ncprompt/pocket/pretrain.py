"""Contrastive pretraining of the pocket model on freshly generated image-caption pairs.

Recipe (see ``docs/pocket-model.md``): CLIP loss with a multi-positive target (the ground-truth
consistency matrix "caption j is true of image i", each row / column normalised), AdamW
(lr 7e-4, betas (0.9, 0.98), eps 1e-6, weight decay 0.1 on matrices), linear warm-up then cosine
decay defined by the step count, gradient clipping at 1.0, learnable logit scale (clamped at 100).
The text tower runs only up to the longest end token of the batch (identical features thanks
to the causal mask).  The step count is fixed (:data:`DEFAULT_STEPS`), so a rerun with the same
seed gives the same weights (deterministic algorithms, fixed thread count); ``minutes`` is only a
safety cap that ends a run early (and says so) on a slower machine.

The output is a *folder* (default ``runs/pocket-pretrain``, never the shipped weights): it holds
``checkpoint.pt`` (fp32 model, optimiser and generator state, written atomically every
``save_every`` steps; a rerun of the same command resumes from it and ends with the same weights
as an uninterrupted run), and at the end ``pocket.safetensors`` (fp16) with
``open_clip_config.json``, an open_clip ``local-dir:`` model folder.  Shipping it is an explicit
copy into ``src/ncprompt/pocket/weights/``.

    python -m ncprompt.pocket.pretrain --output runs/pocket-pretrain
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from ncprompt.backbones.text_encoder import PromptTextEncoder
from ncprompt.pocket.model import (
    POCKET_CONFIG,
    POCKET_NAME,
    POCKET_OPEN_CLIP_CONFIG,
    POCKET_PREPROCESS,
    register_pocket,
    save_state_dict_fp16,
)
from ncprompt.pocket.world import PretrainWorld
from ncprompt.utils import atomic_write, cosine_decay

DEFAULT_STEPS = 3400
DEFAULT_BATCH = 256
DEFAULT_OUTPUT = Path("runs/pocket-pretrain")

_MEAN = torch.tensor(POCKET_PREPROCESS["mean"]).view(1, 3, 1, 1)
_STD = torch.tensor(POCKET_PREPROCESS["std"]).view(1, 3, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``(B,3,32,32)`` in [0,1] -> the model's input (open_clip's Normalize with the pocket mean/std)."""
    return (images - _MEAN) / _STD


def encode_text_trimmed(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed only up to the last end token of the batch, through
    the project's one text path (:class:`ncprompt.backbones.text_encoder.PromptTextEncoder`; with
    the causal mask, positions after the end token never influence it)."""
    enc = PromptTextEncoder(model)
    return enc(enc.token_embeddings(tokens), enc.pool_index(tokens))


def multi_positive_clip_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """CLIP loss whose targets are the consistency matrix (rows: images, columns: captions)."""
    img = F.normalize(img, dim=-1)
    txt = F.normalize(txt, dim=-1)
    logits = scale * img @ txt.t()
    t = target.float()
    li = -(t / t.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    lt = -(t / t.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (li + lt) / 2


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return cosine_decay(lr, step - warmup, max(1, steps - warmup))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "ln" in n or "bias" in n or "logit_scale" in n:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain(
    output: Path | str = DEFAULT_OUTPUT,
    minutes: float = 90,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    lr: float = 7e-4,
    warmup: int = 200,
    weight_decay: float = 0.1,
    threads: int = 2,
    log_every: int = 20,
    save_every: int = 250,
    bf16: bool = False,
    device: str = "cpu",
    model_config: Path | str | None = None,
    stop_after: int | None = None,
    bench: int = 1,
    sprites: Path | str | None = None,
) -> dict:
    """Pretrain the pocket model for ``steps`` steps into the folder ``output`` (resuming from its checkpoint).

    ``stop_after`` ends this call after that many steps of the schedule (checkpoint written, no
    final weights); a later call with the same arguments resumes and finishes bitwise as one run would.

    ``bench=3`` pretrains on bench 3's pretraining artworks only (:mod:`ncprompt.pocket.bench3`), read
    from the pack ``sprites`` (``python -m ncprompt.pocket.bench3 pack``) or, without it, from the
    installed sprite banks (the same catalogue, bit for bit).

    Deterministic under ``seed`` for a given step count (and thread count).  ``minutes`` only
    caps the wall time: a run that hits it stops early, saves what it has and reports
    ``stopped_early``.  Returns a summary dict (steps done, wall seconds, pairs/s, last loss).
    """
    args = dict(locals())
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _pretrain(**{**args, "output": Path(output)})
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(
    output,
    minutes,
    seed,
    steps,
    batch_size,
    lr,
    warmup,
    weight_decay,
    log_every,
    save_every,
    bf16,
    device,
    threads,
    model_config,
    stop_after,
    bench,
    sprites,
) -> dict:
    output = Path(output)
    if output.suffix == ".safetensors" or output.resolve() == POCKET_OPEN_CLIP_CONFIG.parent.resolve():
        raise ValueError(
            f"--output {output} must be a fresh run folder (not the shipped weights); copy the result explicitly"
        )
    output.mkdir(parents=True, exist_ok=True)
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:  # cuBLAS is deterministic only with a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # on a GPU an op without a deterministic kernel warns instead of ending the run
    torch.use_deterministic_algorithms(True, warn_only=on_gpu)
    torch.manual_seed(seed)
    name = _register_config(model_config)
    model = open_clip.create_model(name).to(device)
    model.train()
    tokenizer = open_clip.get_tokenizer(name)
    world = _world(seed, bench, sprites)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    n_params = sum(p.numel() for p in model.parameters())
    ckpt_path = output / "checkpoint.pt"
    recipe = {
        "model": open_clip.get_model_config(name),
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "threads": threads,
        "bf16": bf16,
    }
    if bench != 1:  # the keys only where they differ, so bench-1 checkpoints still resume
        recipe["bench"] = bench
        recipe["sprites_sha256"] = hashlib.sha256(world.cat.sprites.numpy().tobytes()).hexdigest()[:16]
    start, loss_avg = 0, None
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["recipe"] != recipe:
            raise ValueError(f"{ckpt_path} was written by another recipe {ck['recipe']}; use a fresh --output folder")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        world.g.set_state(ck["world_rng"])
        torch.set_rng_state(ck["torch_rng"])
        start, loss_avg = int(ck["step"]), ck["loss_avg"]
    print(
        f"pocket pretrain: {n_params / 1e6:.2f}M parameters, {steps} steps x batch {batch_size}, seed {seed}, "
        f"threads {threads}, cap {minutes} min -> {output}" + (f" (resuming at step {start})" if start else ""),
        flush=True,
    )
    t0 = time.time()
    t_log, stopped_early, step = t0, False, start
    gen_time = 0.0
    for step in range(start, steps):
        tg = time.time()
        batch = world.batch(batch_size)
        tokens = tokenizer(batch.captions)
        target = batch.consistency().to(device)
        images = normalize(batch.images).to(device)
        tokens = tokens.to(device)
        gen_time += time.time() - tg
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            img = model.encode_image(images)
            txt = encode_text_trimmed(model, tokens)
        loss = multi_positive_clip_loss(img.float(), txt.float(), model.logit_scale.exp(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        lv = float(loss.detach())
        loss_avg = lv if loss_avg is None else 0.95 * loss_avg + 0.05 * lv
        done = step + 1
        if done % log_every == 0 or done == steps:
            now = time.time()
            sps = log_every / max(1e-9, now - t_log) if done % log_every == 0 else float("nan")
            t_log = now
            print(
                f"step {done}/{steps}  loss {lv:.4f} (avg {loss_avg:.4f})  scale {model.logit_scale.exp().item():.1f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}  {sps:.2f} steps/s = {sps * batch_size:.0f} pairs/s  "
                f"data {100 * gen_time / (now - t0):.1f}%  elapsed {(now - t0) / 60:.1f} min",
                flush=True,
            )
        if save_every and done % save_every == 0 and done != steps:
            _save_checkpoint(ckpt_path, model, opt, world, done, loss_avg, recipe)
        if stop_after is not None and done >= stop_after and done < steps:
            stopped_early = True
            break
        if (time.time() - t0) / 60 > minutes and done < steps:
            print(f"WARNING: time cap of {minutes} min reached after {done}/{steps} steps; stopping early", flush=True)
            stopped_early = True
            break
    wall = time.time() - t0
    done = step + 1 if steps > start else start
    _save_checkpoint(ckpt_path, model, opt, world, done, loss_avg, recipe)
    if not stopped_early:
        save_state_dict_fp16(model.cpu(), output / "pocket.safetensors")
        _write_open_clip_config(output / "open_clip_config.json", recipe["model"])
    summary = {
        "steps": done,
        "planned_steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "wall_s": round(wall, 1),
        "pairs_per_s": round((done - start) * batch_size / max(wall, 1e-9), 1),
        "final_loss_avg": round(loss_avg or float("nan"), 4),
        "logit_scale": round(model.logit_scale.exp().item(), 2),
        "stopped_early": stopped_early,
        "parameters": n_params,
        "output": str(output),
    }
    print("done:", summary, flush=True)
    return summary


def _world(seed: int, bench: int, sprites: Path | str | None) -> PretrainWorld:
    """The pretraining stream of bench 1 (every artwork) or bench 3 (its pretraining artworks only)."""
    if bench == 1:
        if sprites is not None:
            raise ValueError("--sprites is a bench-3 pack; give --bench 3 with it")
        return PretrainWorld(seed=seed)
    if bench != 3:
        raise ValueError(f"--bench {bench}: only 1 (the shipped model) and 3 exist")
    from ncprompt.pocket import bench3

    cat = bench3.load_pack(sprites) if sprites is not None else bench3.pretrain_catalogue()
    return PretrainWorld(seed=seed, mix=bench3.PRETRAIN_MIX3, cat=cat)


def _register_config(model_config: Path | str | None) -> str:
    """Register the model config with open_clip; returns its model name (``pocket`` by default)."""
    register_pocket()
    if model_config is None or Path(model_config).resolve() == POCKET_CONFIG.resolve():
        return POCKET_NAME
    path = Path(model_config)
    if path.stem not in open_clip.list_models():
        open_clip.add_model_config(path)
    return path.stem


def _write_open_clip_config(path: Path, model_cfg: dict) -> None:
    """An open_clip ``local-dir:`` config (model config + the pocket preprocessing)."""
    text = json.dumps({"model_cfg": model_cfg, "preprocess_cfg": POCKET_PREPROCESS}, indent=4) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _save_checkpoint(path: Path, model, opt, world, step: int, loss_avg, recipe: dict) -> None:
    """Everything a resumed run needs, written atomically (tmp file then ``os.replace``)."""
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "world_rng": world.g.get_state(),
        "torch_rng": torch.get_rng_state(),
        "step": step,
        "loss_avg": loss_avg,
        "recipe": recipe,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def export_checkpoint(run_dir: Path | str, dest: Path | str) -> Path:
    """Write the model of ``run_dir/checkpoint.pt`` as a ``local-dir:`` folder ``dest`` (fp16 weights + config),
    to evaluate an unfinished run."""
    run_dir, dest = Path(run_dir), Path(dest)
    ck = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    dest.mkdir(parents=True, exist_ok=True)
    model = torch.nn.Module()
    model.state_dict = lambda: ck["model"]  # type: ignore[method-assign]
    save_state_dict_fp16(model, dest / "pocket.safetensors")
    _write_open_clip_config(dest / "open_clip_config.json", ck["recipe"]["model"])
    print(f"step {ck['step']} of {run_dir} -> {dest}")
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Pretrain the pocket CLIP model on generated image-caption pairs.")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="run folder (checkpoint, final weights)")
    ap.add_argument("--minutes", type=float, default=90.0, help="wall-time safety cap (the schedule is set by --steps)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=7e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--model-config", type=Path, default=None, help="open_clip model config (default: pocket.json)")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    ap.add_argument("--device", default="cpu", help="torch device (the committed weights were trained on cpu)")
    ap.add_argument("--export", type=Path, default=None, help="only write the checkpoint's model to this folder")
    ap.add_argument("--bench", type=int, default=1, choices=[1, 3],
                    help="3: pretrain on bench 3's pretraining artworks only (docs/pocket-model.md)")
    ap.add_argument("--sprites", type=Path, default=None,
                    help="bench 3: the pack of `python -m ncprompt.pocket.bench3 pack` (default: the sprite banks)")
    ap.add_argument("--stop-after", type=int, default=None, help="end this call after N steps (checkpoint kept)")
    a = ap.parse_args(argv)
    if a.export:
        export_checkpoint(a.output, a.export)
        return
    pretrain(
        a.output,
        minutes=a.minutes,
        seed=a.seed,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        warmup=a.warmup,
        threads=a.threads,
        log_every=a.log_every,
        save_every=a.save_every,
        bf16=a.bf16,
        device=a.device,
        model_config=a.model_config,
        stop_after=a.stop_after,
        bench=a.bench,
        sprites=a.sprites,
    )


if __name__ == "__main__":
    main()
