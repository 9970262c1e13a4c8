"""The ``ncprompt`` command line: models, datasets, methods, zeroshot, train, eval, demo, analyze, report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ncprompt.config import ConfigError, RunConfig, load_yaml, merge


def _common(p: argparse.ArgumentParser, training: bool = True) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--config", help="YAML file with any run option (flags override it)")
    g.add_argument("--model", help="open_clip architecture (see `ncprompt models`); default: pocket")
    g.add_argument("--pretrained", help="open_clip pretrained tag, or a local checkpoint file (.pt/.bin/.safetensors)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="autocast precision (default fp32 on CPU)")
    g.add_argument("--dataset", help="registered dataset (see `ncprompt datasets`)")
    g.add_argument("--root", help="dataset folder or file (for folder/csv datasets and custom locations)")
    g.add_argument("--protocol", choices=["all", "base2new"], help="all classes, or train on base and test base+new")
    g.add_argument("--shots", type=int, help="training images per class (0: all); n_max under --imbalance")
    g.add_argument("--imbalance", type=float, metavar="TAU", help="exponential class imbalance ratio tau in (0, 1]")
    g.add_argument("--seed", type=int, help="seed (sampling, init, order)")
    g.add_argument("--max-test-per-class", type=int, help="cap test images per class (faster evaluation)")
    g.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/ncprompt or $NCPROMPT_CACHE)")
    g.add_argument("--no-cache", action="store_true", default=None, help="do not read or write the feature cache")
    g.add_argument("--templates", help='zero-shot templates: "dataset", "ensemble", "simple" or one "... {} ..."')
    g.add_argument("--output", help="run folder (config, metrics.jsonl, checkpoints, prompts, results.json)")
    if not training:
        return
    t = p.add_argument_group("training")
    t.add_argument("--method", help="prompt method (see `ncprompt methods`); default coop")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", choices=["sgd", "adamw"])
    t.add_argument("--views", type=int, help="cached augmented views per training image")
    t.add_argument("--eval-every", type=int, help="evaluate on the test split every N epochs (0: at the end)")
    t.add_argument("--no-resume", action="store_true", help="start over even if the run folder has a checkpoint")
    c = p.add_argument_group("CoOp context")
    c.add_argument("--n-ctx", type=int, help="number of context vectors")
    c.add_argument("--ctx-init", help='initialise the context from words, e.g. "a photo of a"')
    c.add_argument("--csc", action="store_true", default=None, help="class-specific context")
    c.add_argument("--class-token-position", choices=["end", "middle", "front"])
    n = p.add_argument_group("NPT regularisers")
    n.add_argument("--npt", action="store_true", default=None, help="add the NPT regularisers")
    n.add_argument("--lambda-lc", type=float, help="weight of language-modality collapse (default 0.1)")
    n.add_argument("--lambda-mi", type=float, help="weight of multi-modality isomorphism (default 0.1)")
    n.add_argument("--lc-form", choices=["pairwise", "anchored"])
    n.add_argument("--mi-form", choices=["self_duality", "cross_similarity"])
    n.add_argument("--uncentered", action="store_true", default=None, help="LC on uncentred text features")
    n.add_argument("--anchor-align", choices=["procrustes", "identity"])
    n.add_argument("--no-diagnostics", action="store_true", default=None, help="skip per-epoch NC metrics")


def config_from_args(a: argparse.Namespace, method: str | None = None) -> RunConfig:
    """Defaults < --config YAML < flags."""
    d: dict[str, Any] = load_yaml(a.config) if getattr(a, "config", None) else {}
    g = lambda name: getattr(a, name, None)  # noqa: E731
    flat = {"model": g("model"), "pretrained": g("pretrained"), "device": g("device"), "precision": g("precision"),
            "dataset": g("dataset"), "root": g("root"), "protocol": g("protocol"), "shots": g("shots"),
            "imbalance": g("imbalance"), "max_test_per_class": g("max_test_per_class"), "cache_dir": g("cache_dir"),
            "output": g("output"), "method": method or g("method")}
    over: dict[str, Any] = {k: v for k, v in flat.items() if v is not None}
    if g("no_cache"):
        over["use_cache"] = False
    if g("no_diagnostics"):
        over["diagnostics"] = False
    train = {"epochs": g("epochs"), "batch_size": g("batch_size"), "lr": g("lr"), "optimizer": g("optimizer"),
             "views": g("views"), "eval_every": g("eval_every"), "seed": g("seed")}
    over["train"] = {k: v for k, v in train.items() if v is not None}
    mo = {"n_ctx": g("n_ctx"), "ctx_init": g("ctx_init"), "class_specific": g("csc"),
          "class_token_position": g("class_token_position"), "templates": g("templates")}
    over["method_options"] = {k: v for k, v in mo.items() if v is not None}
    npt = {"enabled": g("npt"), "lambda_lc": g("lambda_lc"), "lambda_mi": g("lambda_mi"), "lc_form": g("lc_form"),
           "mi_form": g("mi_form"), "anchor_align": g("anchor_align")}
    if g("uncentered"):
        npt["centered"] = False
    over["npt"] = {k: v for k, v in npt.items() if v is not None}
    merged = merge(d, over)
    if merged.get("method") == "zeroshot":
        merged.setdefault("shots", 0)  # zero-shot needs no training images
    from ncprompt.methods.base import options_for

    # CLI flags shared by several methods apply where the method knows them; YAML options stay strict
    opts = merged.get("method_options", {})
    known = options_for(merged.get("method", "coop"), opts)
    merged["method_options"] = {k: v for k, v in opts.items() if k in known or k not in mo}
    return RunConfig.from_dict(merged)


def _print_result(res: dict[str, Any]) -> None:
    keys = [k for k in ("all", "base", "new") if k in res]
    parts = [f"{k}: top1 {res[k]['top1']:.2f}  macro-F1 {res[k]['macro_f1']:.2f}" for k in keys]
    if "hm" in res:
        parts.append(f"HM {res['hm']:.2f}")
    for k in keys:
        if "groups" in res[k]:
            parts.append(f"{k} head/middle/tail " + " / ".join(f"{v:.1f}" for v in res[k]["groups"].values()))
    print(f"[{res['method']}{'+npt' if res.get('npt') else ''}] " + " | ".join(parts))


def cmd_models(a: argparse.Namespace) -> int:
    import open_clip

    from ncprompt.backbones.openclip import list_backbones

    for name in list_backbones():
        tags = open_clip.list_pretrained_tags_by_model(name) if name in open_clip.list_models() else []
        extra = " (project model, shipped weights)" if name == "pocket" else ""
        print(f"{name}{extra}" + (f"  pretrained: {', '.join(tags)}" if tags and a.tags else ""))
    return 0


def cmd_datasets(a: argparse.Namespace) -> int:
    from ncprompt.data import DATASETS, register_builtin_datasets

    register_builtin_datasets()
    for name in DATASETS:
        print(f"{name:28s} {DATASETS.describe(name)}")
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from ncprompt.methods import METHODS

    for name in METHODS:
        print(f"{name:12s} {METHODS.describe(name)}")
    return 0


def cmd_train(a: argparse.Namespace, method: str | None = None) -> int:
    from ncprompt.protocols.experiment import Experiment

    cfg = config_from_args(a, method)
    exp = Experiment(cfg)
    if exp.backbone.random_weights:
        print(f"note: {cfg.model} runs with RANDOM weights (no --pretrained given): accuracies are not meaningful")
    out = Path(cfg.output) if cfg.output else None
    res = exp.run(out, resume=not getattr(a, "no_resume", False))
    _print_result(res)
    if out:
        print(f"results: {out / 'results.json'}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from ncprompt.protocols.experiment import Experiment, load_run

    cfg, prompt = load_run(a.run_dir)
    over = {k: v for k, v in {"dataset": a.dataset, "root": a.root, "protocol": a.protocol,
                              "max_test_per_class": a.max_test_per_class}.items() if v is not None}
    d = merge(cfg.to_dict(), over)
    d["output"] = None
    cfg = RunConfig.from_dict(d)
    exp = Experiment(cfg)
    method = exp.build()
    if prompt is not None:
        method.load_prompt_state(prompt)
    from ncprompt.protocols.experiment import evaluate

    res = {"method": cfg.method, "npt": cfg.npt.enabled}
    for name, ev in exp.eval_sets().items():
        res[name] = evaluate(method, ev, exp.groups if name in ("all", "base") else None, cfg.diagnostics)
    if "base" in res and "new" in res:
        from ncprompt.metrics.classification import harmonic_mean

        res["hm"] = harmonic_mean(res["base"]["top1"], res["new"]["top1"])
    _print_result(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncprompt", description=__doc__)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("models", help="list model architectures")
    s.add_argument("--tags", action="store_true", help="also list open_clip pretrained tags")
    s.set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list registered datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("methods", help="list prompt methods").set_defaults(func=cmd_methods)
    s = sub.add_parser("zeroshot", help="evaluate zero-shot CLIP")
    _common(s, training=False)
    s.set_defaults(func=lambda a: cmd_train(a, "zeroshot"))
    s = sub.add_parser("train", help="train prompts (and evaluate)")
    _common(s)
    s.set_defaults(func=cmd_train)
    s = sub.add_parser("eval", help="evaluate a finished run folder (optionally on another dataset)")
    s.add_argument("run_dir")
    s.add_argument("--dataset")
    s.add_argument("--root")
    s.add_argument("--protocol", choices=["all", "base2new"])
    s.add_argument("--max-test-per-class", type=int)
    s.add_argument("--json", help="also write the results to this JSON file")
    s.set_defaults(func=cmd_eval)
    _register_extra(sub)
    return p


def _register_extra(sub: Any) -> None:
    """Sub-commands that live in their own modules (demo, analyze, report, pocket)."""
    for mod in ("ncprompt.protocols.demo", "ncprompt.analysis.cli", "ncprompt.pocket.cli"):
        try:
            module = __import__(mod, fromlist=["add_commands"])
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        module.add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.ERROR, format="%(message)s")
    from ncprompt.utils import set_progress

    if a.no_progress:
        set_progress(False)
    else:
        set_progress(sys.stderr.isatty())
    try:
        return int(a.func(a) or 0)
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"ncprompt: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
