"""The ``ncprompt`` command line.

Every run option comes from the typed config tree (:mod:`ncprompt.config`): each field is a flag
(``--epochs``, ``--n-ctx``, ``--lambda-lc`` ...; ``--help`` shows its meaning and default), and any
key can be set as ``--set train.warmup_epochs=0``. Layers, later wins: defaults < ``--preset`` <
``--config`` YAML < ``--set`` < flags. Building the parser imports nothing heavy; a command loads
torch, open_clip and data only when it runs. Every failure ends as one line on stderr (``--debug``
shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from dataclasses import dataclass
from typing import Any, Literal

from ncprompt.config import (
    METHOD_CONFIGS,
    PRESETS,
    ConfigError,
    DataSection,
    NPTConfig,
    RunConfig,
    RunSection,
    TrainConfig,
    dump_yaml,
    load_yaml,
    merge_layers,
    method_config_class,
    preset,
)
from ncprompt.config.base import parse_assignment, set_dotted

SECTIONS: dict[str, type] = {"run": RunSection, "data": DataSection, "train": TrainConfig, "npt": NPTConfig}
#: flag names that differ from the field name (field -> flag); aliases kept from earlier versions
RENAMES = {("npt", "enabled"): "npt", ("run", "use_cache"): "no-cache", ("data", "workers"): "data-workers"}
ALIASES = {("method", "class_specific"): ["--csc"], ("npt", "centered"): ["--uncentered"]}
#: keys only reachable with --set (mappings)
SET_ONLY = {("data", "options")}
#: ``protocol``'s flags for its ``grid`` section (launcher; ncprompt.config.grid): key under grid -> flag name
GRID_FLAGS = {"launcher": "launcher", "slurm.partition": "partition", "slurm.account": "account",
              "slurm.time_min": "time-min", "slurm.cpus_per_cell": "cpus-per-cell",
              "slurm.gpus_per_cell": "gpus-per-cell", "slurm.mem_gb": "mem-gb",
              "slurm.array_parallelism": "array-parallelism", "slurm.cluster": "slurm-cluster",
              "slurm.wait": "no-wait", "ray.address": "ray-address", "ray.cpus_per_task": "cpus-per-task",
              "ray.gpus_per_task": "gpus-per-task", "ray.num_cpus": "ray-num-cpus"}
RENAMES.update({("grid", key): name for key, name in GRID_FLAGS.items()})


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


@dataclass
class Flag:
    section: str
    key: str
    names: list[str]
    kind: Literal["value", "list", "true", "false"]
    help: str
    choices: list[str] | None = None


def _describe(field: Any) -> str:
    return (field.description or "").rstrip(".")


def _kind_and_choices(annotation: Any) -> tuple[str, list[str] | None]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is bool:
        return "bool", None
    if typing.get_origin(annotation) is Literal:
        return "value", [str(v) for v in typing.get_args(annotation)]
    lits = [a for a in args if typing.get_origin(a) is Literal]
    if lits:
        return "value", [str(v) for a in lits for v in typing.get_args(a)]
    if typing.get_origin(annotation) is list or any(typing.get_origin(a) is list for a in args):
        return "list", None
    return "value", None


def _flag(section: str, key: str, field: Any, default: Any, taken: set[str], help_default: str) -> Flag | None:
    if (section, key) in SET_ONLY:
        return None
    kind, choices = _kind_and_choices(field.annotation)
    name = RENAMES.get((section, key), key.replace("_", "-"))
    desc = _describe(field)
    if kind == "bool" and (section, key) not in RENAMES:
        kind = "false" if default else "true"
        name = f"no-{name}" if default else name
        desc = f"{'turn off: ' if default else ''}{desc}"
    elif kind == "bool":  # a renamed switch (--no-cache, --npt): its help says what the flag does
        kind = "false" if default else "true"
        off = (field.json_schema_extra or {}).get("off_help") if isinstance(field.json_schema_extra, dict) else None
        desc = (off or f"turn off: {desc}") if default else desc
    if name in taken:
        name = f"{section}-{name}"
    taken.add(name)
    flag_kind: Any = kind
    return Flag(section, key, [f"--{name}", *ALIASES.get((section, key), [])], flag_kind,
                f"{desc} [{section}.{key}; {help_default}]", choices)


def run_flags(skip: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
              defaults: dict[tuple[str, str], Any] | None = None) -> list[Flag]:
    """One flag per field of the run/data/train/npt sections; ``defaults``: a command's own defaults (shown in
    the help instead of the field's)."""
    taken: set[str] = set()
    out = []
    for section, model in SECTIONS.items():
        for key, field in model.model_fields.items():
            if (section, key) in skip:
                continue
            default = (defaults or {}).get((section, key), field.get_default(call_default_factory=True))
            f = _flag(section, key, field, default, taken, f"default {default!r}")
            if f is not None:
                out.append(f)
    return out


def grid_flags(taken: set[str]) -> list[Flag]:
    """One flag per scalar key of the grid section (``sbatch`` and ``setup``: --set grid.slurm.sbatch.qos=high)."""
    from ncprompt.config.grid import GridSection

    out = []
    for key in GRID_FLAGS:
        sub, _, leaf = key.rpartition(".")
        model = GridSection.model_fields[sub].annotation if sub else GridSection
        field = model.model_fields[leaf]
        default = field.get_default(call_default_factory=True)
        f = _flag("grid", key, field, default, taken, f"default {default!r}")
        if f is not None:
            out.append(f)
    return out


def method_flags(methods: list[str] | None = None, taken: set[str] | None = None) -> list[Flag]:
    """One flag per method option (the union over methods); help lists each method's default."""
    names = methods if methods is not None else sorted(METHOD_CONFIGS)
    taken = set(taken or ())
    fields: dict[str, dict[str, Any]] = {}
    for m in names:
        for key, field in method_config_class(m).model_fields.items():
            if key != "name":
                fields.setdefault(key, {})[m] = field
    out = []
    for key, per in fields.items():
        field = next(iter(per.values()))
        defaults = {m: f.get_default(call_default_factory=True) for m, f in per.items()}
        if len(set(map(repr, defaults.values()))) == 1:
            shown = f"{', '.join(per)}; default {next(iter(defaults.values()))!r}"
        else:
            shown = "defaults: " + ", ".join(f"{m} {v!r}" for m, v in defaults.items())
        if field.annotation is bool:  # --X where some method defaults to False, --no-X where some to True
            for value in sorted({bool(v) for v in defaults.values()}):
                f = _flag("method", key, field, value, taken, shown)
                if f is not None:
                    out.append(f)
            continue
        f = _flag("method", key, field, None, taken, shown)
        if f is not None:
            out.append(f)
    return out


def add_config_flags(p: argparse.ArgumentParser, flags: list[Flag], title: str) -> None:
    g = p.add_argument_group(title)
    for f in flags:
        dest = f"cfg:{f.section}.{f.key}"
        if f.kind == "true":
            g.add_argument(*f.names, dest=dest, action="store_const", const=True, default=argparse.SUPPRESS,
                           help=f.help)
        elif f.kind == "false":
            g.add_argument(*f.names, dest=dest, action="store_const", const=False, default=argparse.SUPPRESS,
                           help=f.help)
        elif f.kind == "list":
            g.add_argument(*f.names, dest=dest, nargs="+", default=argparse.SUPPRESS, help=f.help, metavar="V")
        else:
            g.add_argument(*f.names, dest=dest, default=argparse.SUPPRESS, choices=f.choices, help=f.help,
                           metavar="{" + ",".join(f.choices) + "}" if f.choices else "V")


def add_layer_flags(p: argparse.ArgumentParser, presets: bool = True) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--config", help="YAML file with any run option (sectioned: run/data/method/train/npt)")
    if presets:
        g.add_argument("--preset", action="append", choices=sorted(PRESETS), metavar="NAME",
                       help="start from a published recipe (see `ncprompt presets`): " + ", ".join(sorted(PRESETS)))
    g.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="set any config key, e.g. --set train.warmup_epochs=0 --set data.options.test_fraction=0.5")
    g.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def _flag_layer(a: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    layer: dict[str, Any] = {}
    method_keys = []
    for dest, value in vars(a).items():
        if not dest.startswith("cfg:"):
            continue
        section, *path = dest[4:].split(".")  # (grid keys have two levels: grid.slurm.partition)
        key = ".".join(path)
        if section == "method" and key == "templates" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        if section == "method" and key != "name":
            method_keys.append(key)
        layer = set_dotted(layer, [section, *path], value)
    return layer, method_keys


def layers_from_args(a: argparse.Namespace, base: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any],
                                                                                                list[str]]:
    """The merged (unvalidated) config of parsed arguments and the method options given as flags."""
    layers: list[dict[str, Any]] = list(base or [])
    layers += [preset(name) for name in getattr(a, "preset", None) or []]
    if getattr(a, "config", None):
        layers.append(load_yaml(a.config))
    sets: dict[str, Any] = {}
    for text in getattr(a, "set", None) or []:
        path, value = parse_assignment(text)
        sets = set_dotted(sets, path, value)
    flags, method_keys = _flag_layer(a)
    return merge_layers(*layers, sets, flags), method_keys


def config_from_args(a: argparse.Namespace, base: list[dict[str, Any]] | None = None) -> RunConfig:
    """The run config of parsed arguments: defaults < ``base`` < presets < --config < --set < flags.
    Validation names the offending key; nothing heavy is loaded."""
    merged, method_keys = layers_from_args(a, base)
    method = merged.get("method", {}).get("name", "coop") if isinstance(merged.get("method"), dict) else "coop"
    fields = method_config_class(method).model_fields
    for key in method_keys:
        if key not in fields:
            own = ", ".join(k for k in fields if k != "name") or "none"
            raise ConfigError(f"--{key.replace('_', '-')}: method {method} has no option {key} (its options: {own})")
    return RunConfig.from_dict(merged, where=getattr(a, "config", None) or "")


# --- commands ------------------------------------------------------------------------------

def cmd_models(a: argparse.Namespace) -> int:
    from ncprompt.backbones.catalog import format_catalog, model_catalog

    print(format_catalog(model_catalog(), tags=a.tags), end="")
    return 0


def cmd_tables(a: argparse.Namespace) -> int:
    from ncprompt.analysis.tables import main as tables_main

    return tables_main([*a.dirs, "--output", a.output])


def cmd_datasets(a: argparse.Namespace) -> int:
    import ncprompt.protocols  # noqa: F401  (registers the datasets defined above the data layer)
    from ncprompt.data import DATASETS

    for name in DATASETS:
        print(f"{name:28s} {DATASETS.describe(name)}")
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from ncprompt.methods import METHODS

    for name in METHODS:
        opts = ", ".join(k for k in method_config_class(name).model_fields if k != "name")
        print(f"{name:12s} {METHODS.describe(name)}" + (f"  (options: {opts})" if a.options else ""))
    return 0


def cmd_presets(a: argparse.Namespace) -> int:
    for name in sorted(PRESETS):
        print(f"{name:12s} {PRESETS[name][0]}")
        if a.show:
            print("  " + dump_yaml(preset(name)).replace("\n", "\n  ").rstrip())
    return 0


def cmd_train(a: argparse.Namespace, base: list[dict[str, Any]] | None = None) -> int:
    cfg = config_from_args(a, base)
    if a.print_config:
        print(dump_yaml(cfg.to_dict()), end="")
        return 0
    resume = not getattr(a, "no_resume", False)
    with _ranks(cfg.run.device):
        return _train(cfg, resume)


def _ranks(device: str | None) -> Any:
    """Under torchrun: the process group (gloo/NCCL) around a command, output on rank 0 only."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        import contextlib

        return contextlib.nullcontext()
    from ncprompt.engine.distributed import ranks_for_command

    return ranks_for_command(device)


def _train(cfg: RunConfig, resume: bool) -> int:
    folder = None
    if cfg.run.output:
        from ncprompt.engine.run_folder import RunFolder

        folder = RunFolder(cfg.run.output)
        folder.check(cfg, resume)  # other settings / not a run folder: refused before anything loads
        from ncprompt.engine.distributed import is_main

        if is_main():  # under torchrun rank 0 holds the lock (and writes)
            folder.acquire()  # a second process on the same folder: refused now
    try:
        from ncprompt.protocols.experiment import Experiment

        exp = Experiment(cfg)
        if exp.backbone.random_weights:
            print(f"note: {cfg.run.model} runs with RANDOM weights (no --pretrained given): accuracies are not "
                  "meaningful")
        res = exp.run(folder.path if folder else None, resume=resume, folder=folder)
    finally:
        if folder is not None:
            folder.release()
    print(res.summary_line())
    if folder is not None:
        print(f"results: {folder.path / 'results.json'}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from ncprompt.engine.results import write_results
    from ncprompt.protocols.run_eval import evaluate_run, prepare_eval

    over: dict[str, Any] = {"run": {"output": None}}
    for key, section in (("dataset", "data"), ("root", "data"), ("protocol", "data"), ("max_test_per_class", "data"),
                         ("eval_split", "data"), ("targets", "data"), ("workers", "data"), ("device", "run")):
        if getattr(a, key, None) is not None:
            over = set_dotted(over, [section, key], getattr(a, key))
    for text in a.set:
        path, value = parse_assignment(text)
        over = set_dotted(over, path, value)
    plan = prepare_eval(a.run_dir, over, a.json)  # only evaluation keys may change; --json never hits run files
    with _ranks(plan.config.run.device):  # under torchrun: features and NC sums sharded over the ranks, rank 0 writes
        from ncprompt.engine.distributed import is_main

        res = evaluate_run(plan)
        print(res.summary_line())
        if a.json and is_main():
            write_results(a.json, res)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from ncprompt.protocols.demo import cmd_demo as run

    return run(a)


def cmd_protocol(a: argparse.Namespace) -> int:
    if a.status:
        from ncprompt.protocols.launchers.status import status_command

        return status_command(a.status, a.resubmit_failed)
    if a.resubmit_failed:
        raise ConfigError("--resubmit-failed goes with --status GRID (the grid folder whose failed cells to resubmit)")
    missing = [f"--{k}" for k in ("datasets", "methods", "output") if not getattr(a, k)]
    if missing:
        raise ConfigError(f"protocol needs {', '.join(missing)} (or --status GRID to see a grid's cells)")
    base, _ = layers_from_args(a, [a.protocol_defaults])
    if a.print_config:
        from ncprompt.protocols.demo import protocol_config

        print(dump_yaml(protocol_config(base, a.datasets, a.methods, a.seeds, a.output, a.shots, a.workers)), end="")
        return 0
    from ncprompt.protocols.demo import run_protocol

    return run_protocol(base, a.datasets, a.methods, a.seeds, a.output, a.shots, a.workers, not a.no_resume)


# --- parser --------------------------------------------------------------------------------

EPILOG = ("Any config key can also be set with --set KEY=VALUE (e.g. --set train.warmup_epochs=0). "
          "Order: defaults < --preset < --config < --set < flags.")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="ncprompt", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    from ncprompt import __version__

    p.add_argument("--version", action="version", version=f"ncprompt {__version__}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", "--debug", dest="debug", action="store_true",
                   help="log details and show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    s = sub.add_parser("models", help="list model architectures")
    s.add_argument("--tags", action="store_true", help="also list open_clip pretrained tags")
    s.set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list registered datasets").set_defaults(func=cmd_datasets)
    s = sub.add_parser("methods", help="list prompt methods")
    s.add_argument("--options", action="store_true", help="also list each method's options")
    s.set_defaults(func=cmd_methods)
    s = sub.add_parser("presets", help="list the published recipes (--preset NAME)")
    s.add_argument("--show", action="store_true", help="also print each preset's settings")
    s.set_defaults(func=cmd_presets)

    rflags = run_flags()
    taken = {n.removeprefix("--") for f in rflags for n in f.names}
    s = sub.add_parser("zeroshot", help="evaluate zero-shot CLIP", epilog=EPILOG)
    add_nproc_flag(s)
    add_layer_flags(s, presets=False)
    add_config_flags(s, [f for f in rflags if f.section in ("run", "data")], "run and data")
    add_config_flags(s, method_flags(["zeroshot"], taken), "zero-shot")
    s.set_defaults(func=lambda a: cmd_train(a, [preset("zeroshot")]))

    s = sub.add_parser("train", help="train prompts (and evaluate)", epilog=EPILOG)
    add_layer_flags(s)
    s.add_argument("--method", dest="cfg:method.name", default=argparse.SUPPRESS, metavar="NAME",
                   help=f"prompt method: {', '.join(sorted(METHOD_CONFIGS))} [method.name; default 'coop']")
    s.add_argument("--no-resume", action="store_true",
                   help="start over: clear the run folder's earlier run (even one with other settings)")
    add_nproc_flag(s)
    for title, section in (("run", "run"), ("data", "data"), ("training", "train"), ("NPT regularisers", "npt")):
        add_config_flags(s, [f for f in rflags if f.section == section], title)
    add_config_flags(s, method_flags(None, taken), "method options (each applies to the methods named)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="evaluate a run folder (optionally on another dataset)", epilog=EPILOG)
    s.add_argument("run_dir", help="the --output folder of `ncprompt train`")
    s.add_argument("--dataset", help="evaluate on this dataset instead [data.dataset]")
    s.add_argument("--root", help="its folder or file [data.root]")
    s.add_argument("--protocol", choices=["all", "base2new"], help="[data.protocol]")
    s.add_argument("--max-test-per-class", help="[data.max_test_per_class]")
    s.add_argument("--eval-split", choices=["test", "val"], help="score the test or the validation split "
                   "[data.eval_split]")
    s.add_argument("--targets", nargs="+", help="also evaluate these datasets [data.targets]")
    s.add_argument("--device", help="[run.device]")
    s.add_argument("--data-workers", dest="workers", type=int, metavar="N",
                   help="DataLoader worker processes decoding images [data.workers]")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", default=[], help="override any config key")
    s.add_argument("--json", help="also write the results to this JSON file")
    add_nproc_flag(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="label images (files, folders, CSVs of paths) with a trained run")
    s.add_argument("run_dir", help="the --output folder of a finished `ncprompt train`")
    s.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively), CSV files "
                   "of path[,label] rows")
    s.add_argument("--top-k", type=int, default=5, help="classes reported per image [default 5]")
    s.add_argument("--classes", nargs="+", metavar="NAME", help="predict over these class names (or one text file "
                   "of names) instead of the run's; methods with one shared context only")
    s.add_argument("--output", help="write the predictions to this file [default: stdout]")
    s.add_argument("--format", choices=["csv", "json"], help="[default: json for an --output ending in .json, "
                   "else csv]")
    s.add_argument("--device", help="[default: the run's run.device]")
    s.set_defaults(func=lambda a: _call("ncprompt.protocols.predict", "cmd_predict", a))

    s = sub.add_parser("export", help="a trained run as a shareable folder: classifier head, settings, model card")
    s.add_argument("run_dir", help="the --output folder of a finished `ncprompt train`")
    s.add_argument("--output", required=True, help="the export folder (new or empty)")
    s.add_argument("--device", help="[default: the run's run.device]")
    s.set_defaults(func=lambda a: _call("ncprompt.protocols.export", "cmd_export", a))

    s = sub.add_parser("demo", help="the main job: zero-shot, CoOp, CoOp+NPT on the pocket suite (base-to-new)")
    s.add_argument("--output", default="outputs/demo", help="grid folder [default outputs/demo]")
    s.add_argument("--datasets", nargs="+", help="pocket datasets (default: the demo suite)")
    s.add_argument("--methods", nargs="+", help="e.g. zeroshot coop coop+npt")
    s.add_argument("--seeds", nargs="+", type=int, default=[1], help="[default 1]")
    s.add_argument("--epochs", type=int, help="[default: the pocket recipe's]")
    s.add_argument("--workers", type=_nproc, default=1, help="parallel runs (processes) [default 1]")
    s.add_argument("--no-resume", action="store_true", help="run every cell again (even one finished earlier)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("protocol", help="a grid of runs (datasets x shots x methods x seeds) with summary tables",
                       epilog=EPILOG + " Per-method options: --set per_method.coop.n_ctx=4 or per_method: in YAML.")
    s.add_argument("--datasets", nargs="+", help="datasets: NAME or NAME=ROOT (needed unless --status)")
    s.add_argument("--methods", nargs="+", help="method specs, e.g. zeroshot coop coop+npt (needed unless --status)")
    s.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="[default 1 2 3]")
    s.add_argument("--shots", type=int, nargs="+", help="shots per class; several values: a few-shot sweep")
    s.add_argument("--output", help="grid folder (one run folder per cell; needed unless --status)")
    s.add_argument("--workers", type=_nproc, default=1, help="parallel runs (processes) [default 1]")
    s.add_argument("--no-resume", action="store_true", help="start every cell over (even with other settings)")
    s.add_argument("--status", metavar="GRID", help="show each cell of the grid folder GRID: done, running, queued, "
                   "failed (with its last log line) or missing; writes the summary once every cell is done")
    s.add_argument("--resubmit-failed", action="store_true",
                   help="with --status: submit the failed cells again (the grid's launcher; they resume)")
    add_layer_flags(s)
    skip = {("run", "output"), ("data", "dataset"), ("data", "shots"), ("train", "seed"), ("npt", "enabled")}
    pflags = run_flags(skip, {("data", "protocol"): "base2new"})
    add_config_flags(s, pflags, "base run options (every cell)")
    add_config_flags(s, grid_flags({n.removeprefix("--") for f in pflags for n in f.names}),
                     "where the cells run (grid section: local, SLURM through submitit, Ray; docs/distributed.md)")
    s.set_defaults(func=cmd_protocol, protocol_defaults={"data": {"protocol": "base2new"}})

    s = sub.add_parser("analyze", help="NC report (JSON + markdown) and plots of run folders")
    s.add_argument("run_dirs", nargs="+")
    s.set_defaults(func=lambda a: _call("ncprompt.analysis.cli", "cmd_analyze", a))
    s = sub.add_parser("tables", help="paper tables (base-to-new, few-shot, cross-dataset, long-tail) from runs")
    s.add_argument("dirs", nargs="+", help="run folders or folders holding them (a grid folder)")
    s.add_argument("--output", default="tables", help="folder for {layout}.md/.csv/.tex")
    s.set_defaults(func=cmd_tables)
    s = sub.add_parser("report", help="correlation of NC metrics with base/new/HM accuracy across runs")
    s.add_argument("dirs", nargs="+", help="run folders or folders holding them")
    s.add_argument("--output", default="report",
                   help="folder for runs.csv, correlations.{csv,json,md}, correlations_FAMILY_ACCURACY.png")
    s.add_argument("--pool", action="store_true",
                   help="correlate each model's runs over datasets, protocols and shots together (default: each "
                        "family of one model, dataset, protocol and shots apart; no r below 5 runs)")
    s.set_defaults(func=lambda a: _call("ncprompt.analysis.cli", "cmd_report", a))
    s = sub.add_parser("evidence", help="the NPT paper's claims decided by paired statistics (docs/evidence.md)")
    s.add_argument("inputs", nargs="+", help="run or grid folders, or compact JSON parts (--export)")
    s.add_argument("--output", help="folder for evidence.{json,md} and gain_vs_tau.png")
    s.add_argument("--export", help="write the runs read as one compact JSON part (benchmarks/results/evidence/)")
    s.add_argument("--part", help="the part's name, recorded in --export's file")
    s.add_argument("--command", help="the command that made the runs, recorded in --export's file")
    s.add_argument("--allow-unpaired", action="store_true", help="decide on the pairs found (unpaired runs named)")
    s.add_argument("--tail-tau", type=float, default=0.06, help="tau of the head/middle/tail claims [default 0.06]")
    s.add_argument("--min-n", type=int, default=15, help="fewest runs for a per-dataset Spearman [default 15]")
    s.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples [default 10000]")
    s.set_defaults(func=lambda a: _call("ncprompt.analysis.evidence", "cmd_evidence", a))
    return p


def _nproc(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a number of processes >= 1 is needed, got {text!r}")
    return int(text)


def nproc_problem(nproc: int, cpus: int | None = None, gpus: int | None = None, device: str | None = None
                  ) -> str | None:
    """Why ``--nproc nproc`` cannot run here, or None. On CUDA (``device`` cuda, or unset with a GPU visible) each
    rank needs a GPU of its own (NCCL refuses two ranks on one device); on CPU, one rank per usable core (ranks
    beyond them only wait on each other). Torch is imported only when the answer depends on the GPUs."""
    cpus = len(usable_cpus()) if cpus is None else cpus
    if device is not None and device.startswith("cpu") and nproc <= cpus:
        return None
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_cuda = device.startswith("cuda") if device is not None else gpus > 0
    if on_cuda:
        if nproc <= gpus:
            return None
        return (f"--nproc {nproc} on CUDA needs a GPU per process and {gpus} is/are visible: run --nproc {gpus} or "
                f"fewer, or --device cpu (gloo, one process per core)")
    if nproc <= cpus:
        return None
    return (f"--nproc {nproc}: this process may use {cpus} CPU core(s) and sees {gpus} CUDA GPU(s); run at most one "
            f"process per core or GPU: --nproc {max(cpus, gpus)} or fewer")


def add_nproc_flag(p: argparse.ArgumentParser) -> None:
    """``--nproc N`` (and the multi-node ``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``) on a command that is
    one run (grids place one run per process/device instead: --workers)."""
    p.add_argument("--nproc", type=_nproc, metavar="N",
                   help="run on N processes (per node): re-executes this command under torchrun (docs/distributed.md)")
    p.add_argument("--nnodes", type=_nproc, metavar="N", help="nodes taking part (run the same command on each)")
    p.add_argument("--node-rank", type=int, metavar="R", help="this node's rank, 0..N-1 [default: $SLURM_NODEID]")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                   help="node 0's address for torchrun's rendezvous [default: $MASTER_ADDR:$MASTER_PORT]")


def _call(module: str, name: str, a: argparse.Namespace) -> int:
    import importlib

    return getattr(importlib.import_module(module), name)(a)


def _one_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    msg = " ".join(str(msg).split())
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return msg or type(e).__name__


def _in_trainer(tb: Any) -> bool:
    """True when an interrupt arrived inside the training loop (which reports it itself)."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "train" and code.co_filename.endswith(os.path.join("engine", "trainer.py")):
            return True
        tb = tb.tb_next
    return False


def cpu_snapshot(stat: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """Per CPU: (all jiffies, idle + iowait jiffies) from ``/proc/stat``'s ``cpuN`` lines."""
    out: dict[int, tuple[int, int]] = {}
    with open(stat) as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *fields = line.split()
                v = [int(x) for x in fields[:8]]
                out[int(name[3:])] = (sum(v), v[3] + (v[4] if len(v) > 4 else 0))
    return out


def busy_between(a: dict[int, tuple[int, int]], b: dict[int, tuple[int, int]], cpus: set[int]) -> float:
    """Cores' worth of time the CPUs ``cpus`` were not idle between two snapshots (steal counts as busy)."""
    busy = 0.0
    for c in cpus & a.keys() & b.keys():
        total, idle = b[c][0] - a[c][0], b[c][1] - a[c][1]
        if total > 0:
            busy += 1.0 - idle / total
    return busy


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask: a container's cpuset, ``taskset``)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def busy_cores(interval_s: float = 0.1, stat: str = "/proc/stat") -> float | None:
    """How many of this process's CPUs other processes keep busy now: the non-idle share of each usable
    CPU over ``interval_s`` (this process sleeps meanwhile), summed. None where ``/proc/stat`` is missing."""
    import time

    try:
        a = cpu_snapshot(stat)
        time.sleep(interval_s)
        b = cpu_snapshot(stat)
    except (OSError, ValueError, IndexError):
        return None
    return busy_between(a, b, usable_cpus())


def default_threads(env: dict[str, str] | None = None, busy: float | None = None, cores: int | None = None) -> None:
    """Torch's intra-op threads when the user did not choose (``OMP_NUM_THREADS`` unset, not under torchrun):
    all usable cores on an idle machine (torch's default), otherwise the cores that other processes leave
    idle (rounded, at least 1). Measured (docs/benchmarks.md, under load): with 2 competing processes on 2
    cores, 1 thread is 1.2x (ViT-B-16) to 1.8x (pocket) faster than 2, whose OpenMP barriers wait on
    descheduled threads. Must run before torch is imported (OpenMP reads the variable once)."""
    env = os.environ if env is None else env
    if "OMP_NUM_THREADS" in env or "WORLD_SIZE" in env or "torch" in sys.modules:
        return
    busy = busy_cores() if busy is None else busy
    cores = cores or len(usable_cpus())
    if busy is not None and busy >= 0.5:
        env["OMP_NUM_THREADS"] = str(max(1, round(cores - busy)))


def pin_threads(a: argparse.Namespace, env: dict[str, str] | None = None) -> None:
    """``run.threads`` given (flag, --set, YAML, preset) -> ``OMP_NUM_THREADS`` before torch loads, so OpenMP
    starts with it (the run also sets torch's count: :class:`~ncprompt.protocols.experiment.Experiment`)."""
    env = os.environ if env is None else env
    threads = _run_key(a, "threads")
    if isinstance(threads, bool) or not isinstance(threads, (int, str)) or not str(threads).strip().isdigit():
        return  # unset, or not a count: validation names run.threads
    if int(threads) >= 1:
        env["OMP_NUM_THREADS"] = str(int(threads))


def _run_key(a: argparse.Namespace, key: str) -> Any:
    """``run.<key>`` as the command's flags, --set, YAML and presets give it, unvalidated (None: unset, or a layer
    that cannot be read, which the command itself then reports in one line)."""
    try:
        merged, _ = layers_from_args(a)
    except Exception:  # noqa: BLE001
        return None
    run = merged.get("run")
    return run.get(key) if isinstance(run, dict) else None


def one_line_warnings() -> None:
    """Show warnings of ncprompt's own classes (e.g. ``CacheWarning``) as one line on stderr, ``warning: ...``,
    instead of Python's ``path:line: Category: message`` and source line; other warnings as before."""
    import warnings

    shown = warnings.showwarning
    if getattr(shown, "one_line", False):
        return

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if not category.__module__.startswith("ncprompt"):
            return shown(message, category, filename, lineno, file, line)
        text = str(message)
        print(text if text.startswith("warning: ") else f"warning: {text}", file=file or sys.stderr)

    show.one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    from ncprompt.engine.run_header import set_cli_args  # (stdlib only)

    set_cli_args(sys.argv[1:] if argv is None else argv)
    if a.command in ("zeroshot", "train", "eval", "predict", "export", "demo", "protocol", "analyze"):  # computing
        pin_threads(a)
        default_threads()
    nodes = getattr(a, "nnodes", None) or 1
    multi = any(getattr(a, k, None) is not None for k in ("nnodes", "node_rank", "rdzv_endpoint"))
    nproc = getattr(a, "nproc", None) or 1
    if (nproc * nodes > 1 or multi) and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        too_many = nproc_problem(nproc, device=_run_key(a, "device") or None) if nproc > 1 else None
        if too_many:
            print(f"ncprompt: error: {too_many}", file=sys.stderr)
            return 2
        from ncprompt.engine.distributed import DistributedError, launch, node_options

        try:
            rendezvous = node_options(nodes, a.node_rank, a.rdzv_endpoint)
        except DistributedError as e:
            print(f"ncprompt: error: {e}", file=sys.stderr)
            return 2
        return launch(a.nproc or 1, list(argv) if argv is not None else sys.argv[1:], nodes=rendezvous)
    import logging

    logging.basicConfig(level=logging.INFO if a.debug else logging.ERROR, format="%(message)s")
    logging.getLogger("ncprompt").setLevel(logging.INFO if a.debug else logging.WARNING)  # our warnings are shown
    one_line_warnings()
    if a.no_progress:  # (bars are on only on a terminal by default; utils loads torch, so only when asked)
        from ncprompt.utils import set_progress

        set_progress(False)
    try:
        code = int(a.func(a) or 0)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt as e:
        if not _in_trainer(e.__traceback__):
            print("ncprompt: interrupted (Ctrl-C); finished work is kept: run the same command again to resume",
                  file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ncprompt models | head -1`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:  # noqa: BLE001  (every failure ends as one line; --debug shows the traceback)
        if a.debug:
            import traceback

            traceback.print_exc()
        known = isinstance(e, (ValueError, KeyError, OSError))
        hint = "" if known else f" ({type(e).__name__}; rerun with --debug for the traceback)"
        print(f"ncprompt: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2 if known else 1


if __name__ == "__main__":
    sys.exit(main())
