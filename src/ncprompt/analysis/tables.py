"""Tables laid out as in the CoOp / CoCoOp / MaPLe papers, from the results of many runs.

Input: one flat row per run (:func:`run_row` makes one from a ``results.json``, its ``config.yaml`` and
``inputs.json``). Runs are pooled over seeds only: a row of a table holds the runs of one *setting*
(:mod:`ncprompt.config.setting`: the resolved config but the seed, the model and the weights' and data's
content digests), so runs that differ in anything else (augmentation, templates, test cap, epochs, method
or NPT options, weights, data) are never averaged together. A seed found in two runs of one setting (a
copied or repeated run) is counted once, with a warning on stderr and in the table's notes. The columns
Model, Shots, τ and Epochs are shown when they vary within a table; whatever else tells two rows of one
method apart is listed in a "Setting" column (``crop_min=0.5, flip=False``). Rows sort numerically.

Cells are mean ± sample std (ddof = 1) over the seeds, with the number of seeds n. HM of a dataset
is the harmonic mean of its mean base and mean new accuracy (as the papers report it; the ± is the
std of the per-seed HMs). "Average" rows average the per-dataset means of one group over the
datasets of the table (HM of those averages); a group missing a dataset gets "(k/K datasets)".

Layouts: base-to-new (Base, New, HM per dataset), few-shot (one column per shots value),
cross-dataset / domain generalisation (source, each target, average over targets) and long-tailed
(overall, head, middle, tail). Each renders as Markdown, CSV (mean, std, n columns) and LaTeX
(booktabs; best value per dataset block in bold).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncprompt.analysis.names import display_name, method_order
from ncprompt.analysis.runs import (
    ROW_FIELDS,
    drop_repeated_seeds,
    read_run_file,
    results_files,
    row_setting,
    run_files,
    setting_labels,
)
from ncprompt.config.setting import setting_items, setting_key, split_data

#: setting columns shown when they vary within a table, and their headers
SETTING_HEADERS = {"model": "Model", "shots": "Shots", "tau": "τ", "epochs": "Epochs"}
#: setting items shown elsewhere (the columns above, Method, Dataset): never repeated in "Setting"
SHOWN_ITEMS = ("run.model", "data.shots", "data.imbalance", "train.epochs", "method.name", "npt.enabled", "dataset",
               *ROW_FIELDS)


# --- rows from results ------------------------------------------------------------------------
def _options_text(opts: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((opts or {}).items()) if v is not None)


def run_row(res: dict[str, Any], config: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
            run: str | Path | None = None) -> dict[str, Any]:
    """One flat row from a run's results (with its config.yaml and inputs.json, for the setting).

    Keys: dataset, model, method (with "+npt"), shots, tau, epochs (from the setting: None where the
    method does not read them, e.g. zero-shot CLIP; the linear probe keeps its shots), options (method
    options off their defaults), protocol, seed, run, setting (:func:`~ncprompt.config.setting.setting_items`),
    then the metrics base / new / hm / all, ``{split}_{head,middle,tail}`` and ``target:{name}``."""
    config = config or res.get("config") or None
    info = res.get("info") or {}
    setting = setting_items(config, inputs, res)
    opts = _method_options(config or {})
    npt = (config or {}).get("npt") or {}
    if res.get("npt") and isinstance(npt, dict):
        opts.update({f"npt.{k}": v for k, v in npt.items() if k in ("lambda_lc", "lambda_mi", "lc_form", "mi_form")})
    tau = setting.get("data.imbalance")
    row: dict[str, Any] = {
        "dataset": (info.get("dataset") or {}).get("name") or res.get("dataset"),
        "model": setting.get("run.model") or res.get("model"),
        "method": f"{res.get('method')}{'+npt' if res.get('npt') else ''}",
        "shots": setting.get("data.shots"),
        "tau": tau if tau not in (None, 1, 1.0) else None,
        "epochs": setting.get("train.epochs"),
        "options": _options_text(opts),
        "protocol": res.get("protocol"),
        "seed": res.get("seed"),
        "run": str(run) if run is not None else None,
        "setting": setting,
    }
    for split in ("all", "base", "new"):
        if isinstance(res.get(split), dict):
            row[split] = res[split]["top1"]
            for g, v in (res[split].get("groups") or {}).items():
                row[f"{split}_{g}"] = v
    if res.get("hm") is not None:
        row["hm"] = res["hm"]
    for name, rep in (res.get("targets") or {}).items():
        row[f"target:{name}"] = rep["top1"]
    return row


def _method_options(config: dict[str, Any]) -> dict[str, Any]:
    """The method options that differ from the method's defaults (sectioned ``method: {name: ...}`` configs;
    the older flat ``method_options`` as given)."""
    method = config.get("method")
    if not isinstance(method, dict):
        return dict(config.get("method_options") or {})
    from ncprompt.config import ConfigError, method_config_class

    try:
        fields = method_config_class(method.get("name", "coop")).model_fields
    except ConfigError:
        fields = {}
    return {k: v for k, v in method.items()
            if k != "name" and (k not in fields or fields[k].get_default(call_default_factory=True) != v)}


def collect_rows(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """:func:`run_row` of every results.json under the given folders (config.yaml, inputs.json beside it)."""
    rows = []
    for f in results_files(dirs):
        cfg, inputs = run_files(f)
        rows.append(run_row(read_run_file(f, json.loads), cfg, inputs, run=f.parent))
    return rows


# --- cells and tables -------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """A table entry: mean, std over seeds (None for one seed or for averages), and n."""

    mean: float
    std: float | None = None
    n: int | None = None

    @classmethod
    def of(cls, values: list[float], mean: float | None = None) -> Cell:
        m = sum(values) / len(values) if mean is None else mean
        if len(values) < 2:
            return cls(m, None, len(values))
        mu = sum(values) / len(values)
        return cls(m, math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1)), len(values))


@dataclass
class Table:
    """Rows of text and :class:`Cell`; ``blocks``: indices of rows that start a block (a rule)."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[str | Cell | None]]
    blocks: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digits: int = 2

    def _numeric_cols(self) -> list[int]:
        return [j for j in range(len(self.header)) if any(isinstance(r[j], Cell) for r in self.rows)]

    def _best(self) -> set[tuple[int, int]]:
        """(row, col) of the highest mean per numeric column within each block of >= 2 rows."""
        bounds = sorted(set(self.blocks) | {0}) + [len(self.rows)]
        best = set()
        for a, b in zip(bounds, bounds[1:]):
            if b - a < 2:
                continue
            for j in self._numeric_cols():
                vals = [(r[j].mean, i) for i, r in enumerate(self.rows[a:b], a) if isinstance(r[j], Cell)]
                if len(vals) >= 2:
                    top = max(v for v, _ in vals)
                    best |= {(i, j) for v, i in vals if math.isclose(v, top, abs_tol=10 ** -(self.digits + 1))}
        return best

    def _shown_rows(self) -> list[list[str | Cell | None]]:
        """Rows as displayed: the first column blank where it repeats the row above in a block."""
        out = []
        for i, r in enumerate(self.rows):
            same = i > 0 and i not in self.blocks and r[0] == self.rows[i - 1][0]
            out.append(["" if same else r[0], *r[1:]])
        return out

    def _fmt(self, c: str | Cell | None, latex: bool = False, bold: bool = False) -> str:
        if c is None:
            return "–" if not latex else "--"
        if not isinstance(c, Cell):
            return _tex_escape(c) if latex else c
        m = f"{c.mean:.{self.digits}f}"
        if latex:
            m = f"\\textbf{{{m}}}" if bold else m
            return m + (f" {{\\scriptsize$\\pm${c.std:.{self.digits}f}}}" if c.std is not None else "")
        m = f"**{m}**" if bold else m
        return m + (f" ± {c.std:.{self.digits}f}" if c.std is not None else "")

    def markdown(self) -> str:
        best = self._best()
        out = [f"**{self.caption}**", "", "| " + " | ".join(self.header) + " |",
               "|" + "|".join("---:" if j in self._numeric_cols() else "---" for j in range(len(self.header))) + "|"]
        out += ["| " + " | ".join(self._fmt(c, bold=(i, j) in best) for j, c in enumerate(r)) + " |"
                for i, r in enumerate(self._shown_rows())]
        return "\n".join(out + [""] + [f"{n}" for n in self.notes]) + "\n"

    def latex(self) -> str:
        best = self._best()
        num = set(self._numeric_cols())
        spec = "".join("r" if j in num else "l" for j in range(len(self.header)))
        out = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex_escape(self.caption)}}}",
               f"\\label{{tab:{self.name}}}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
               " & ".join(_tex_escape(h) for h in self.header) + " \\\\", "\\midrule"]
        for i, r in enumerate(self._shown_rows()):
            if i in self.blocks and i > 0:
                out.append("\\midrule")
            out.append(" & ".join(self._fmt(c, latex=True, bold=(i, j) in best) for j, c in enumerate(r)) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        out += [f"\\par\\smallskip{{\\footnotesize {_tex_escape(n)}}}" for n in self.notes]
        out.append("\\end{table}")
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        """Numbers unformatted: each numeric column as COL, COL_std, COL_n."""
        num = set(self._numeric_cols())
        head: list[str] = []
        for j, h in enumerate(self.header):
            head += [h, f"{h}_std", f"{h}_n"] if j in num else [h]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(head)
        for r in self.rows:
            line: list[Any] = []
            for j, c in enumerate(r):
                if j in num:
                    line += [c.mean, "" if c.std is None else c.std, "" if c.n is None else c.n] \
                        if isinstance(c, Cell) else ["", "", ""]
                else:
                    line.append("" if c is None else c)
            w.writerow(line)
        return buf.getvalue()

    def write(self, out_dir: str | Path) -> list[Path]:
        from ncprompt.utils import atomic_write

        out = Path(out_dir)
        paths = []
        for ext, text in (("md", self.markdown()), ("csv", self.csv()), ("tex", self.latex())):
            p = out / f"{self.name}.{ext}"
            atomic_write(p, lambda q, t=text: q.write_text(t))
            paths.append(p)
        return paths


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "τ": r"$\tau$",
        "–": "--"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


# --- grouping ---------------------------------------------------------------------------------
#: a group: (model, method label, shots, tau, epochs, the method's setting as text) - pooled over seeds
Group = tuple[Any, ...]


def _num(v: Any) -> tuple[int, float, str]:
    """Sort key: None first, then numbers by value (2 before 10 before 200), then text."""
    if v is None or v == "":
        return (0, 0.0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def _group(row: dict[str, Any]) -> Group:
    method_items, _ = split_data(row_setting(row))
    return (row.get("model"), row["method"], row.get("shots"), row.get("tau"), row.get("epochs"),
            setting_key(method_items))


def _data_key(row: dict[str, Any]) -> str:
    return setting_key(split_data(row_setting(row))[1])


def _varying(rows: list[dict[str, Any]]) -> list[str]:
    """Setting columns with more than one value among the rows (blanks of untrained runs ignored)."""
    return [k for k in SETTING_HEADERS if len({r.get(k) for r in rows if r.get(k) not in (None, "")}) > 1
            or (k == "model" and len({r.get("model") for r in rows}) > 1)]


def _setting_cells(g: Group, shown: list[str]) -> list[str | Cell | None]:
    d = dict(zip(("model", "method", "shots", "tau", "epochs"), g))
    return [None if d[k] in (None, "") else str(d[k]) for k in shown]


def _groups(rows: list[dict[str, Any]]) -> list[Group]:
    """Groups in a stable order: by model, then method as first seen (zero-shot first), then shots, tau,
    epochs by value."""
    seen = list(dict.fromkeys(_group(r) for r in rows))
    models = list(dict.fromkeys(g[0] for g in seen))
    methods = method_order(g[1] for g in seen)
    return sorted(seen, key=lambda g: (models.index(g[0]), methods.index(g[1]), *(_num(x) for x in g[2:5]), g[5]))


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None]


def _hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n) if b + n > 0 else 0.0


def _cells(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, Cell]:
    """Mean ± std over the seeds of one (group, dataset); HM from the mean base and new."""
    out = {m: Cell.of(_values(rows, m)) for m in metrics if m != "hm" and _values(rows, m)}
    if "hm" in metrics and "base" in out and "new" in out:
        per_seed = [float(r["hm"]) if r.get("hm") is not None else _hm(float(r["base"]), float(r["new"]))
                    for r in rows if r.get("base") is not None and r.get("new") is not None]
        out["hm"] = Cell.of(per_seed, mean=_hm(out["base"].mean, out["new"].mean))
    return out


def _n_text(cells: list[Cell]) -> str:
    ns = sorted({c.n for c in cells if c.n is not None})
    return "" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def _long_table(name: str, caption: str, rows: list[dict[str, Any]], metrics: list[str],
                headers: list[str], average: bool = True) -> Table:
    """Dataset blocks of (group rows), one block per (dataset, model) when models differ (best values
    are marked within a block, so never across models); then the Average blocks. Within a dataset, runs
    of one group on other data (another test cap, changed files) are rows of their own."""
    shown = _varying(rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    groups = _groups(rows)
    keyed: dict[tuple[Group, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        keyed.setdefault((_group(r), r["dataset"], _data_key(r)), []).append(r)
    order = {g: i for i, g in enumerate(groups)}
    entries = {e: keyed[e] for e in sorted(keyed, key=lambda e: (datasets.index(e[1]), order[e[0]]))}
    by_group = {g: split_data(row_setting(sel[0]))[0] for (g, _, _), sel in entries.items()}
    method_labels = setting_labels([(g, g[:2], items) for g, items in by_group.items()], SHOWN_ITEMS)
    data_labels = setting_labels([(e, e[:2], split_data(row_setting(sel[0]))[1]) for e, sel in entries.items()],
                                 SHOWN_ITEMS)
    labels = {e: ", ".join(filter(None, [method_labels[e[0]], data_labels[e]])) for e in entries}
    with_setting = any(labels.values())
    header = ["Dataset", "Method", *[SETTING_HEADERS[k] for k in shown], *(["Setting"] if with_setting else []), "n",
              *headers]
    t = Table(name, caption, header, [])
    per: dict[Group, dict[str, dict[str, Cell] | None]] = {}
    for ds in datasets:
        model = object()
        for (g, d, dk), sel in entries.items():
            if d != ds:
                continue
            if g[0] != model:
                t.blocks.append(len(t.rows))
                model = g[0]
            cells = _cells(sel, metrics)
            per.setdefault(g, {})[ds] = cells if ds not in per.get(g, {}) else None  # two data: no average
            t.rows.append([ds, display_name(g[1]), *_setting_cells(g, shown),
                           *([labels[(g, d, dk)]] if with_setting else []), _n_text(list(cells.values())),
                           *[cells.get(m) for m in metrics]])
    if average and len(datasets) > 1:
        model = object()
        for g in groups:
            if g[0] != model:
                t.blocks.append(len(t.rows))
                model = g[0]
            have = {ds: c for ds, c in per.get(g, {}).items() if c is not None}
            avg: dict[str, Cell] = {}
            for m in metrics:
                vals = [c[m].mean for c in have.values() if m in c]
                if vals and m != "hm":
                    avg[m] = Cell(sum(vals) / len(vals))
            if "hm" in metrics and "base" in avg and "new" in avg:
                avg["hm"] = Cell(_hm(avg["base"].mean, avg["new"].mean))
            label = "Average" if len(have) == len(datasets) else f"Average ({len(have)}/{len(datasets)} datasets)"
            t.rows.append([label, display_name(g[1]), *_setting_cells(g, shown),
                           *([method_labels[g]] if with_setting else []), "", *[avg.get(m) for m in metrics]])
        t.notes.append(f"Average: mean over the {len(datasets)} datasets of the per-dataset means"
                       + ("; HM of the averaged base and new." if "hm" in metrics else ".")
                       + (" A dataset whose runs of one setting used other data (rows of their own) is left out "
                          "of that setting's average." if any(c is None for p in per.values() for c in p.values())
                          else ""))
    t.notes.insert(0, "Mean ± sample std over n seeds of one setting; untrained rows (zero-shot) have no "
                      "shots/epochs.")
    if with_setting:
        t.notes.insert(1, "Setting: the config keys in which rows of one method differ (short key names; "
                          "content digests cut to 8 hex digits; ? = not recorded).")
    on_val = sum(row_setting(r).get("data.eval_split") == "val" for r in rows)
    if on_val:  # validation numbers never pass for test numbers
        t.notes.insert(0, "Scored on the VALIDATION split (data.eval_split = val), not the test split." if
                       on_val == len(rows) else f"{on_val} of {len(rows)} runs are scored on the VALIDATION "
                       "split (data.eval_split = val; their Setting says so), the others on the test split.")
    return t


# --- the paper layouts ------------------------------------------------------------------------
def base_to_new_table(rows: list[dict[str, Any]]) -> Table | None:
    """CoCoOp/MaPLe Table 1: Base, New, HM per dataset and on average."""
    rows = [r for r in rows if r.get("base") is not None and r.get("new") is not None]
    if not rows:
        return None
    return _long_table("base_to_new", "Base-to-new generalisation (top-1 %)", rows, ["base", "new", "hm"],
                       ["Base", "New", "HM"])


def long_tail_table(rows: list[dict[str, Any]]) -> Table | None:
    """Accuracy of the head / middle / tail thirds of the classes (by training count) under imbalance."""
    out = []
    for r in rows:
        split = "base" if r.get("base_head") is not None else "all" if r.get("all_head") is not None else None
        if split:
            out.append({**r, "overall": r[split], "head": r[f"{split}_head"], "middle": r[f"{split}_middle"],
                        "tail": r[f"{split}_tail"]})
    if not out:
        return None
    return _long_table("long_tail", "Class-imbalanced few-shot: overall, head, middle and tail accuracy (top-1 %)",
                       out, ["overall", "head", "middle", "tail"], ["Overall", "Head", "Middle", "Tail"])


def few_shot_table(rows: list[dict[str, Any]], metric: str | None = None) -> Table | None:
    """CoOp's few-shot results: one column per number of shots (zero-shot as its own row)."""
    metric = metric or ("all" if any(r.get("all") is not None for r in rows) else "base")
    rows = [r for r in rows if r.get(metric) is not None]
    shots = sorted({r["shots"] for r in rows if r.get("shots") is not None})
    if len(shots) < 2:
        return None
    # shots is the column, so not part of a row's setting; a method without shots (zero-shot) fills every column
    pivot = [{**r, "shots": None, f"s{r['shots']}" if r.get("shots") is not None else "zs": r[metric],
              "setting": {k: v for k, v in row_setting(r).items() if k not in ("data.shots", "shots")}} for r in rows]
    keys = [f"s{s}" for s in shots]
    for r in pivot:
        if "zs" in r:
            r.update({k: r["zs"] for k in keys})
    return _long_table("few_shot", f"Few-shot accuracy ({metric} classes, top-1 %) by shots per class", pivot, keys,
                       [f"{s} shots" if s else "all images" for s in shots])


def transfer_table(rows: list[dict[str, Any]], kind: str = "cross_dataset") -> Table | None:
    """CoCoOp Tables 2/3: accuracy on the source dataset, on each target and averaged over targets.

    ``kind``: "cross_dataset" or "domain_generalisation" (same layout, different caption)."""
    rows = [r for r in rows if any(k.startswith("target:") for k in r)]
    if not rows:
        return None
    targets = sorted({k for r in rows for k in r if k.startswith("target:")})
    src = "all" if any(r.get("all") is not None for r in rows) else "base"
    pivot = [{**r, "source": r.get(src), "target_avg": sum(r[k] for k in targets if k in r)
              / max(1, sum(k in r for k in targets))} for r in rows]
    caption = {"cross_dataset": "Cross-dataset transfer (top-1 %): trained on the source, evaluated on targets",
               "domain_generalisation": "Domain generalisation (top-1 %): trained on the source, evaluated on "
                                        "shifted domains"}[kind]
    names = [k.removeprefix("target:").split("=")[0] for k in targets]
    return _long_table(kind, caption, pivot, ["source", *targets, "target_avg"], ["Source", *names, "Target avg."],
                       average=False)


def all_tables(rows: list[dict[str, Any]], warnings: list[str] | None = None) -> list[Table]:
    """Every layout that the rows have data for; a seed repeated within a setting is counted once and
    named in each table's notes (and appended to ``warnings``)."""
    rows, repeated = drop_repeated_seeds(rows)
    if warnings is not None:
        warnings += repeated
    found = [base_to_new_table(rows), few_shot_table(rows), long_tail_table(rows), transfer_table(rows)]
    if not any(t is not None for t in found) and any(r.get("all") is not None for r in rows):
        found.append(_long_table("accuracy", "Accuracy (top-1 %)", [r for r in rows if r.get("all") is not None],
                                 ["all"], ["Top-1"]))
    tables = [t for t in found if t is not None]
    for t in tables:
        t.notes += [w[0].upper() + w[1:] for w in repeated]
    return tables


def write_paper_tables(rows: list[dict[str, Any]], out_dir: str | Path,
                       warnings: list[str] | None = None) -> list[Path]:
    """``out_dir/{layout}.{md,csv,tex}`` for every layout with data (repeated seeds: see :func:`all_tables`), and
    ``few_shot.png`` (accuracy against shots, :func:`ncprompt.analysis.plots.few_shot_plot`) with the few-shot
    table; returns the files written."""
    return write_tables(all_tables(rows, warnings), rows, out_dir)


def write_tables(tables: list[Table], rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``tables`` (of ``rows``) and, with a few-shot table, ``few_shot.png``; returns the files written."""
    paths = [p for t in tables for p in t.write(out_dir)]
    if any(t.name == "few_shot" for t in tables):
        from ncprompt.analysis.plots import few_shot_plot

        png = few_shot_plot(rows, Path(out_dir) / "few_shot.png")
        paths += [png] if png is not None else []
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m ncprompt.analysis.tables DIR... [--output DIR]`` (also ``ncprompt tables``)."""
    import argparse

    p = argparse.ArgumentParser(prog="ncprompt tables", description="paper tables from run folders")
    p.add_argument("dirs", nargs="+", help="run folders or folders holding them (a grid folder)")
    p.add_argument("--output", default="tables", help="folder for {layout}.md/.csv/.tex [default tables]")
    a = p.parse_args(argv)
    from ncprompt.engine.results import ResultsError

    try:
        rows = collect_rows(a.dirs)
    except ResultsError as e:
        print(f"ncprompt tables: error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"ncprompt tables: error: no results.json under {' '.join(a.dirs)}; pass run or grid folders",
              file=sys.stderr)
        return 2
    warnings: list[str] = []
    tables = all_tables(rows, warnings)
    paths = write_tables(tables, rows, a.output)
    for t in tables:
        print(t.markdown())
    for w in warnings:
        print(f"ncprompt tables: {w}", file=sys.stderr)
    repeats = len(rows) - len(drop_repeated_seeds(rows)[0])
    counted = f" ({repeats} repeated seeds counted once)" if repeats else ""
    print(f"{len(rows)} runs{counted}; {len(paths)} files in {a.output}/ (.md, .csv, .tex, few-shot .png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
