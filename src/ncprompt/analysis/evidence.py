"""``ncprompt evidence``: the NPT paper's claims decided by paired statistics (issue 22).

Input: run folders (read through :mod:`ncprompt.analysis.runs`, so every run keeps its *setting*) or compact
JSON parts (:func:`write_compact`: one row per run, the setting included, written after each part of the
evidence grid so that parts run at different times add up).

Pairing. An NPT run's control is the run whose setting equals its own with every ``npt.*`` item removed, on
the same seed: same dataset and data digests, method and its options, shots, tau, epochs, model and weights.
A run (NPT or not) without its twin is *unpaired*: named, and refused unless ``allow_unpaired``. Pairs are
grouped into *families*: the method's setting without the data items (:func:`~ncprompt.config.setting.split_data`)
and without ``data.imbalance`` (tau), so one family is "CoOp (+ one NPT form) at every tau on every dataset".

Claims (each a :func:`~ncprompt.analysis.verdicts.paired_verdict` over (dataset, seed) differences):

* ``hm``: NPT raises HM on each family at each tau: ``d = HM(npt) - HM(base)``;
* ``tau``: the gain grows as tau falls: for tau levels ``t_hi > t_lo``, ``d = gain(t_lo) - gain(t_hi)`` on the
  (dataset, seed) cells both levels have (consecutive levels, and the extremes when there are more than two);
* ``new``: NPT helps new classes more than base: ``d = (new gain) - (base gain)``;
* ``group``: head / middle / tail accuracy gains at ``tail_tau`` (the base split's groups), each its own claim;
* ``dg``: the mean accuracy over domain-generalisation targets (runs that report targets);
* ``nc``: the manipulation check, NPT lowers the NC3 gap it is built to lower: ``d = NC3(base) - NC3(npt)``
  (NC3 units, not points; ``relative``: the mean of ``d / NC3(base)``), so a null accuracy result can be read as
  "NPT moved the geometry and accuracy did not follow" or "NPT barely moved it";
* multiplicity: each claim's Wilcoxon p is also given Holm-adjusted within its kind (all ``hm`` claims of the
  report form one family, all ``new`` claims another, ...): a ``held`` claim *survives* when its adjusted p is
  below alpha too; the report names the families in which no claim could survive (m claims x the smallest
  Wilcoxon p the datasets allow >= alpha);
* correlations: NC3 (text-to-image self-duality) of the training images against new-class accuracy and HM,
  Spearman per dataset (``min_n`` runs or more) and pooled with dataset as a fixed effect, over trained runs.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncprompt.analysis.runs import drop_repeated_seeds, results_files, run_files, setting_labels
from ncprompt.analysis.verdicts import (
    HELD,
    PairedVerdict,
    fixed_effect_correlation,
    holm,
    min_wilcoxon_p,
    paired_verdict,
    spearman_by_dataset,
)
from ncprompt.config.setting import setting_key, split_data

#: the compact JSON format (one file per grid part)
FORMAT = "ncprompt-evidence-rows/1"
#: the NC metric correlated with accuracy: NC3, text-to-image self-duality (lower: class means align with text)
NC_METRIC = "nc3_self_duality"
GROUPS = ("head", "middle", "tail")
#: the per-claim level, and the family-wise level of the Holm adjustment
ALPHA = 0.05
METRICS = ("base", "new", "hm")


class EvidenceError(ValueError):
    """Input that cannot be decided on (unpaired cells, an unreadable part): one line, with the fix."""


# --- rows -------------------------------------------------------------------------------------
def result_row(res: dict[str, Any], config: dict[str, Any] | None, inputs: dict[str, Any] | None,
               run: str | Path | None) -> dict[str, Any]:
    """:func:`~ncprompt.analysis.tables.run_row` plus the NC metric (training images, else the base/all test
    split's), the seconds the run took, and the mean over its targets (``dg``)."""
    from ncprompt.analysis.tables import run_row

    row = run_row(res, config, inputs, run=run)
    nc = ((res.get("train") or {}).get("nc") or (res.get("base") or res.get("all") or {}).get("nc") or {})
    row["nc"] = nc.get(NC_METRIC)
    row["seconds"] = res.get("seconds")
    row["trained"] = bool(res.get("epochs_run"))
    targets = [v for k, v in row.items() if k.startswith("target:") and v is not None]
    row["dg"] = sum(targets) / len(targets) if targets else None
    return row


def collect(inputs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows of every run under the given folders and of every compact JSON part given (a ``.json`` file, or
    a folder's ``*.json`` parts when it holds no run)."""
    rows: list[dict[str, Any]] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise EvidenceError(f"{p} does not exist; pass run folders, grid folders or compact JSON parts")
        parts = [p] if p.is_file() and p.name != "results.json" else []
        runs = [] if parts else results_files([p])
        if p.is_dir() and not runs:
            parts = sorted(p.glob("*.json"))
        for f in parts:
            rows += read_compact(f)
        for f in runs:
            cfg, ins = run_files(f)
            rows.append(result_row(json.loads(f.read_text()), cfg, ins, f.parent))
    return rows


def write_compact(rows: list[dict[str, Any]], path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """One part's rows as compact JSON (atomic): what ``ncprompt evidence`` reads back as it read the runs."""
    from ncprompt.utils import atomic_write_bytes

    keep = [{k: v for k, v in r.items() if v is not None and k != "part"} for r in rows]
    atomic_write_bytes(path, (json.dumps({"format": FORMAT, "meta": meta or {}, "rows": keep}, indent=1,
                                         default=str) + "\n").encode())
    return Path(path)


def read_compact(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a compact JSON part (:func:`write_compact`); anything else is an :class:`EvidenceError`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise EvidenceError(f"{path} cannot be read as JSON ({type(e).__name__}); pass parts written by "
                            "`ncprompt evidence --export`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("rows"), list):
        raise EvidenceError(f"{path} is not an evidence part (format {FORMAT!r}); pass parts written by "
                            "`ncprompt evidence --export`")
    meta = {"file": Path(path).name, **(data.get("meta") or {})}
    return [{**r, "part": meta} for r in data["rows"]]


# --- pairing ----------------------------------------------------------------------------------
@dataclass
class Pair:
    """An NPT run and its control: same setting but ``npt.*``, same seed."""

    family: str
    dataset: str
    seed: Any
    tau: float
    control: dict[str, Any]
    treatment: dict[str, Any]

    def gain(self, key: str) -> float | None:
        a, b = self.treatment.get(key), self.control.get(key)
        return None if a is None or b is None else float(a) - float(b)


def _no_npt(setting: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in setting.items() if not k.startswith("npt.")}


def _tau(setting: dict[str, Any]) -> float:
    t = setting.get("data.imbalance")
    return 1.0 if t is None else float(t)


def _run_name(r: dict[str, Any]) -> str:
    return f"{r.get('method')} on {r.get('dataset')} seed {r.get('seed')} tau {_tau(r.get('setting') or {}):g}" + (
        f" ({r['run']})" if r.get("run") else "")


def pair_runs(rows: list[dict[str, Any]]) -> tuple[list[Pair], list[str]]:
    """Each NPT run with its control (see the module docstring), and the runs left unpaired, named.

    Rows without NPT whose method has no NPT run anywhere (zero-shot, a reference) are not counted as
    unpaired. Family labels: the method's name, with what else differs (``setting_labels``) when two
    families share it."""
    cells: dict[tuple[str, Any], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: {"on": [], "off": []})
    for r in rows:
        s = r.get("setting") or {}
        cells[(setting_key(_no_npt(s)), r.get("seed"))]["on" if s.get("npt.enabled") else "off"].append(r)
    npt_methods = {r.get("method", "").removesuffix("+npt") for r in rows
                   if (r.get("setting") or {}).get("npt.enabled")}
    pairs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    unpaired: list[str] = []
    for on_off in cells.values():
        on, off = on_off["on"], on_off["off"]
        if not off:
            unpaired += [f"{_run_name(r)}: no run without NPT of the same setting and seed" for r in on]
        elif not on:
            unpaired += [f"{_run_name(r)}: no NPT run of the same setting and seed" for r in off
                         if r.get("method", "") in npt_methods]
        else:
            pairs += [(setting_key(_family_items(t)), off[0], t) for t in on]
    names = _family_names({fk: (t, _family_items(t)) for fk, _, t in pairs})
    out = [Pair(names[fk], str(t.get("dataset")), t.get("seed"), _tau(t["setting"]), c, t) for fk, c, t in pairs]
    seen: dict[tuple[str, float, str, Any], Pair] = {}
    for p in out:  # one pair per cell: two would overwrite each other in the claims' (dataset, seed) differences
        other = seen.setdefault((p.family, p.tau, p.dataset, str(p.seed)), p)
        if other is not p:
            raise EvidenceError(f"two pairs of {p.family} on {p.dataset} seed {p.seed} tau {p.tau:g} differ in their "
                                f"data or in tau's spelling (1 and none): {other.treatment.get('run')} and "
                                f"{p.treatment.get('run')}; pass the runs of one dataset version and one grid")
    return sorted(out, key=lambda p: (p.family, -p.tau, p.dataset, str(p.seed))), sorted(unpaired)


def _family_names(families: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, str]:
    """{key: label} of families given as {key: (a row of it, its setting items)}: the method's name, with what
    else differs (``setting_labels``) when two families share it."""
    entries = [(k, str(r.get("method", "")).removesuffix("+npt"), items) for k, (r, items) in families.items()]
    labels = setting_labels(entries)
    return {k: m + (f" ({labels[k]})" if labels.get(k) else "") for k, m, _ in entries}


def _family_items(row: dict[str, Any]) -> dict[str, Any]:
    method, _data = split_data(row.get("setting") or {})
    return {k: v for k, v in method.items() if k not in ("data.imbalance", "config")}


# --- claims -----------------------------------------------------------------------------------
def _diffs(pairs: list[Pair], key: str) -> dict[tuple[str, Any], float]:
    return {(p.dataset, p.seed): g for p in pairs if (g := p.gain(key)) is not None}


def decide(pairs: list[Pair], tail_tau: float = 0.06, n_boot: int = 10000, seed: int = 0
           ) -> list[dict[str, Any]]:
    """Every claim's verdict, as dicts (``kind``, ``family``, ``tau`` / ``taus``, the verdict's fields)."""
    by_fam: dict[str, dict[float, list[Pair]]] = defaultdict(lambda: defaultdict(list))
    for p in pairs:
        by_fam[p.family][p.tau].append(p)
    out: list[dict[str, Any]] = []

    def add(kind: str, fam: str, claim: str, diffs: dict[tuple[str, Any], float], **extra: Any) -> None:
        if diffs:
            v = paired_verdict(claim, diffs, n_boot=n_boot, seed=seed)
            out.append({"kind": kind, "family": fam, **extra, **v.to_dict()})

    for fam, taus in sorted(by_fam.items()):
        levels = sorted(taus, reverse=True)
        for t in levels:
            add("hm", fam, f"NPT raises HM on {fam} at tau {t:g}", _diffs(taus[t], "hm"), tau=t)
        for t in levels:
            new, base = _diffs(taus[t], "new"), _diffs(taus[t], "base")
            add("new", fam, f"NPT helps new classes more than base on {fam} at tau {t:g}",
                {k: new[k] - base[k] for k in sorted(new.keys() & base.keys(), key=str)}, tau=t)
        steps = list(zip(levels, levels[1:]))
        if len(levels) > 2:
            steps.append((levels[0], levels[-1]))
        for hi, lo in steps:
            g_hi, g_lo = _diffs(taus[hi], "hm"), _diffs(taus[lo], "hm")
            add("tau", fam, f"the HM gain on {fam} is larger at tau {lo:g} than at tau {hi:g}",
                {k: g_lo[k] - g_hi[k] for k in sorted(g_lo.keys() & g_hi.keys(), key=str)}, taus=[hi, lo])
        at = [t for t in levels if math.isclose(t, tail_tau)]
        for g in GROUPS:
            if at:
                add("group", fam, f"NPT raises {g} accuracy on {fam} at tau {tail_tau:g}",
                    _diffs(taus[at[0]], f"base_{g}"), tau=tail_tau, group=g)
        for t in levels:
            add("dg", fam, f"NPT raises domain-generalisation accuracy on {fam} at tau {t:g}",
                _diffs(taus[t], "dg"), tau=t)
        for t in levels:
            drop = {(p.dataset, p.seed): -g for p in taus[t] if (g := p.gain("nc")) is not None}
            rel = [d / float(p.control["nc"]) for p in taus[t] if (d := drop.get((p.dataset, p.seed))) is not None
                   and p.control.get("nc")]
            add("nc", fam, f"NPT lowers the NC3 gap on {fam} at tau {t:g}", drop, tau=t,
                relative=sum(rel) / len(rel) if rel else None)
    adjust_within_kinds(out)
    return out


def _by_kind(verdicts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in verdicts:
        kinds[v["kind"]].append(v)
    return kinds


def adjust_within_kinds(verdicts: list[dict[str, Any]], alpha: float = ALPHA) -> None:
    """Set ``holm_p``, ``family_size`` and ``survives`` (held and Holm p < alpha) on each verdict, the family
    being every verdict of its ``kind``."""
    for group in _by_kind(verdicts).values():
        for v, hp in zip(group, holm([v["wilcoxon_p"] for v in group]), strict=True):
            v["holm_p"], v["family_size"] = hp, len(group)
            v["survives"] = v["verdict"] == HELD and hp is not None and hp < alpha


def multiplicity_lines(verdicts: list[dict[str, Any]], alpha: float = ALPHA) -> list[str]:
    """One line per kind of claim: its size, the held claims that survive Holm, and whether any could."""
    lines = []
    for kind, group in _by_kind(verdicts).items():
        m = len(group)
        held = sum(v["verdict"] == HELD for v in group)
        kept = sum(bool(v.get("survives")) for v in group)
        n = max(v["n_datasets"] for v in group)
        floor = min(1.0, m * min_wilcoxon_p(n))
        line = f"- `{kind}`: {m} claims, {held} held per claim, {kept} after Holm"
        if floor >= alpha:
            line += (f"; with {n} datasets no claim of this family can survive (m x the smallest Wilcoxon p = "
                     f"{m} x {min_wilcoxon_p(n):.3g} = {floor:.3g} >= {alpha:g}): more datasets, or fewer claims "
                     "fixed in advance, are needed for a family-wise verdict")
        lines.append(line + ".")
    return lines


def method_families(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{label: rows} per base method: the method's setting without data, tau and ``npt.*`` items, so a method's
    runs with and without NPT, at every tau, are one family; labelled as :func:`pair_runs` labels families."""
    keyed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    families = {}
    for r in rows:
        items = _no_npt(_family_items(r))
        k = setting_key(items)
        keyed[k].append(r)
        families[k] = (r, items)
    names = _family_names(families)
    return {names[k]: keyed[k] for k in sorted(keyed)}


def _nc_vs(rows: list[dict[str, Any]], acc: str, min_n: int) -> dict[str, Any]:
    return {"per_dataset": spearman_by_dataset(rows, "nc", acc, min_n=min_n),
            "pooled": fixed_effect_correlation(rows, "nc", acc)}


def correlations(rows: list[dict[str, Any]], min_n: int = 15) -> dict[str, Any]:
    """NC3 vs new-class accuracy and HM over the trained runs: Spearman per dataset and pooled with dataset as
    a fixed effect (``new``, ``hm``: all methods together); the same within each method (``by_method``: NPT on
    and off, every tau); and pooled with (dataset, method) as the fixed effect (``within_method``), so that a
    difference between methods' levels cannot make a correlation that no method shows."""
    trained = [r for r in rows if r.get("trained")]
    fams = method_families(trained)
    cells = [{**r, "dataset": f"{r.get('dataset')} · {m}"} for m, rs in fams.items() for r in rs]
    return {**{acc: _nc_vs(trained, acc, min_n) for acc in ("new", "hm")},
            "by_method": {m: {acc: _nc_vs(rs, acc, min_n) for acc in ("new", "hm")} for m, rs in fams.items()},
            "within_method": {acc: fixed_effect_correlation(cells, "nc", acc) for acc in ("new", "hm")}}


# --- the report -------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str = "+.2f") -> str:
    return "–" if v is None else format(v, spec)


def _p(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def summary_line(v: dict[str, Any]) -> str:
    """A plain-word sentence from one verdict (a placeholder the author may rewrite, never a number made up)."""
    word = {HELD: "held", "not held": "did not hold", "inconclusive": "was inconclusive"}[v["verdict"]]
    if v["verdict"] == HELD and "survives" in v:
        word += " and survives Holm's adjustment" if v["survives"] else " per claim, but not after Holm's adjustment"
    nc, spec = v.get("kind") == "nc", _spec(v)
    unit = " NC3 units" if nc else " points"
    if nc and v.get("relative") is not None:
        unit += f", {v['relative']:.1%} of the control's gap"
    return (f"{v['claim'][0].upper()}{v['claim'][1:]}: {word} (mean {_fmt(v['mean'], spec)}{unit}, 95% interval "
            f"[{_fmt(v['ci_low'], spec)}, {_fmt(v['ci_high'], spec)}], Wilcoxon p {_p(v['wilcoxon_p'])}, Holm p "
            f"{_p(v.get('holm_p'))}, better on {v['datasets_helped']} of {v['n_datasets']} datasets, "
            f"{v['n_pairs']} pairs).")


def _spec(v: dict[str, Any]) -> str:
    """Points to two decimals; NC3 gaps (small numbers, another unit) to three significant digits."""
    return "+.3g" if v.get("kind") == "nc" else "+.2f"


def _mean_cell(v: dict[str, Any]) -> str:
    rel = f" ({v['relative']:.1%})" if v.get("kind") == "nc" and v.get("relative") is not None else ""
    return _fmt(v["mean"], _spec(v)) + rel


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    head = ("| claim | pairs | datasets | mean | 95% interval | Wilcoxon p | Holm p | datasets better | verdict |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {v['claim']} | {v['n_pairs']} | {v['n_datasets']} | {_mean_cell(v)} | [{_fmt(v['ci_low'], _spec(v))}, "
        f"{_fmt(v['ci_high'], _spec(v))}] | {_p(v['wilcoxon_p'])} | {_p(v.get('holm_p'))} | "
        f"{v['datasets_helped']}/{v['n_datasets']} | **{v['verdict']}**"
        f"{' (survives Holm)' * bool(v.get('survives'))} |\n"
        for v in verdicts)


def _part_order(key: str) -> tuple[tuple[Any, ...], str]:
    """Sort key for a part's meta JSON: its name with numbers compared as numbers (b2n-9 before b2n-10)."""
    name = str(json.loads(key).get("part") or "")
    return tuple(int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name))), key


def parts_table(used: Counter[str]) -> str:
    """One line per part (``used``: its meta as sorted-key JSON -> its runs here): runs, cells finished of its
    cells, wall time, machine."""
    lines = ["| part | runs here | finished / cells | wall | machine |", "|---|---|---|---|---|"]
    for key in sorted(used, key=_part_order):
        m = json.loads(key)
        mach = m.get("machine") or {}
        where = ", ".join(f"{k} {mach[k]}" for k in ("cpus", "workers", "cpu", "torch") if mach.get(k) is not None)
        wall = f"{float(m['wall_s']):,.0f} s" if m.get("wall_s") is not None else "–"
        done = f"{m.get('finished', '?')} / {m.get('cells', '?')}" + ("" if m.get("complete", True) else " (partial)")
        lines.append(f"| {m.get('part') or '?'} | {used[key]} | {done} | {wall} | {where or '–'} |")
    return "\n".join(lines) + "\n"


def _pooled_line(acc: str, pool: dict[str, Any], what: str) -> str:
    return (f"| {acc} | pooled, {what} fixed effect ({pool['datasets']} groups; Pearson r of within-group "
            f"residuals) | {pool['n']} | {_fmt(pool['r'], '.3f')} | {_p(pool['p'])} | {pool['why']} |")


def correlation_table(corr: dict[str, Any]) -> str:
    """One table for all methods together, one per method (NPT on and off, every tau), and the pooled
    (dataset, method) fixed effect."""
    head = ["| accuracy | dataset | n | Spearman rho | p | note |", "|---|---|---|---|---|---|"]

    def block(c: dict[str, Any]) -> list[str]:
        lines = []
        for acc in ("new", "hm"):
            lines += [f"| {acc} | {ds} | {e['n']} | {_fmt(e['rho'], '.3f')} | {_p(e['p'])} | {e['why']} |"
                      for ds, e in c[acc]["per_dataset"].items()]
            lines.append(_pooled_line(acc, c[acc]["pooled"], "dataset"))
        return lines

    out = ["**All methods together** (a difference between methods' levels can make this correlation alone)", ""]
    out += head + block(corr) + [""]
    for m, c in corr["by_method"].items():
        out += [f"**Within {m}** (its runs with and without NPT, every tau)", ""] + head + block(c) + [""]
    out += ["**Pooled within methods** ((dataset, method) as the fixed effect)", ""] + head
    out += [_pooled_line(acc, pool, "(dataset, method)") for acc, pool in corr["within_method"].items()]
    return "\n".join(out) + "\n"


def gain_figure(verdicts: list[dict[str, Any]], path: str | Path) -> Path | None:
    """NPT's HM gain against tau per family, mean with its 95% interval; families offset along x so their
    bars never overlap, legend outside the axes."""
    hm = [v for v in verdicts if v["kind"] == "hm" and v["mean"] is not None]
    if not hm:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted({v["family"] for v in hm})
    taus = sorted({v["tau"] for v in hm}, reverse=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.6 / max(1, len(fams))
    for i, fam in enumerate(fams):
        pts = sorted((taus.index(v["tau"]), v) for v in hm if v["family"] == fam)
        xs = [x + (i - (len(fams) - 1) / 2) * width for x, _ in pts]
        ys = [v["mean"] for _, v in pts]
        err = [[y - v["ci_low"] for y, (_, v) in zip(ys, pts)], [v["ci_high"] - y for y, (_, v) in zip(ys, pts)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=fam)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(taus)), [f"{t:g}" for t in taus])
    ax.set_xlabel("imbalance tau (smaller: more imbalanced)")
    ax.set_ylabel("HM gain of NPT (points)")
    ax.set_title("NPT gain vs tau, mean and 95% hierarchical-bootstrap interval", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    from ncprompt.utils import atomic_write

    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def write_evidence(rows: list[dict[str, Any]], out_dir: str | Path, *, allow_unpaired: bool = False,
                   tail_tau: float = 0.06, min_n: int = 15, n_boot: int = 10000,
                   commands: Sequence[str] = ()) -> dict[str, Any]:
    """evidence.json, evidence.md and gain_vs_tau.png in ``out_dir``; returns the JSON's content."""
    from ncprompt.analysis.tables import base_to_new_table, long_tail_table
    from ncprompt.utils import atomic_write_bytes

    rows, repeated = drop_repeated_seeds(rows)
    pairs, unpaired = pair_runs(rows)
    if unpaired and not allow_unpaired:
        more = f" and {len(unpaired) - 3} more" if len(unpaired) > 3 else ""
        raise EvidenceError(f"{len(unpaired)} unpaired run(s): {'; '.join(unpaired[:3])}{more}; run the missing "
                            "cells (or pass --allow-unpaired to decide on the pairs found)")
    if not pairs:
        raise EvidenceError("no NPT run with its control found; pass runs of a method with and without NPT")
    verdicts = decide(pairs, tail_tau=tail_tau, n_boot=n_boot)
    corr = correlations(rows, min_n=min_n)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = gain_figure(verdicts, out / "gain_vs_tau.png")
    used = Counter(json.dumps(m, sort_keys=True) for r in rows if (m := r.get("part")))
    parts = sorted(used, key=_part_order)
    splits = sorted({str((r.get("setting") or {}).get("data.eval_split") or "test") for r in rows})
    doc = {"runs": len(rows), "pairs": len(pairs), "eval_splits": splits, "unpaired": unpaired,
           "repeated_seeds": repeated,
           "verdicts": verdicts, "correlations": corr, "tail_tau": tail_tau, "min_n": min_n,
           "commands": [*(m["command"] for m in map(json.loads, parts) if m.get("command")), *commands],
           "parts": [json.loads(p) for p in parts],
           "figure": fig.name if fig else None}
    atomic_write_bytes(out / "evidence.json", (json.dumps(doc, indent=1, default=str) + "\n").encode())
    md = ["# NPT evidence", "", f"{len(rows)} runs, {len(pairs)} NPT / control pairs "
          f"(pairing: same setting but `npt.*`, same seed; see docs/evidence.md). **Evaluated on the "
          f"{' and '.join(splits)} split{'s' if len(splits) > 1 else ''}** (`data.eval_split`)"
          + (": validation numbers, for choices, not results to report." if splits == ["val"] else "."), ""]
    if unpaired:
        md += ["Unpaired runs (left out):", ""] + [f"- {u}" for u in unpaired] + [""]
    md += [f"- {w}" for w in repeated] + ([""] if repeated else [])
    by_tau: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_tau[_tau(r.get("setting") or {})].append(r)
    for t in sorted(by_tau, reverse=True):
        md += [f"## tau {t:g}", ""]
        for table in (base_to_new_table(by_tau[t]), long_tail_table(by_tau[t]) if t < 1 else None):
            md += [table.markdown(), ""] if table is not None else []
    md += ["## Verdicts", "", f"Per claim: held when the 95% interval lies above 0 and the Wilcoxon p is below "
           f"{ALPHA:g}. Holm p: the Wilcoxon p adjusted within the claim's kind (a family-wise level of {ALPHA:g}); "
           "a held claim *survives Holm* when that is below it too.", "", *multiplicity_lines(verdicts), "",
           verdict_table(verdicts), "## What held, in plain words (generated from the verdicts;"
           " edit freely, numbers stay as computed)", ""]
    md += [f"- {summary_line(v)}" for v in verdicts] + [""]
    md += [f"## NC3 ({NC_METRIC}) vs accuracy (trained runs; Spearman per dataset needs n >= {min_n})", "",
           correlation_table(corr)]
    if fig:
        md += ["## NPT gain vs tau", "", f"![NPT HM gain vs tau]({fig.name})", ""]
    if parts:
        md += ["## Parts", "", "Runs taken over from another part (`--reuse-rows`) count in each part that lists "
               "them; wall time is the part's own, on the machine named.", "", parts_table(used)]
    md += ["## Commands", "", "```"] + (doc["commands"] or ["(not recorded)"]) + ["```", ""]
    atomic_write_bytes(out / "evidence.md", "\n".join(md).encode())
    return doc


def cmd_evidence(a: Any) -> int:
    """``ncprompt evidence INPUT... --output DIR [--export FILE]``."""
    if not (a.output or a.export):
        raise EvidenceError("nothing to write: pass --output DIR (the report) and/or --export FILE (a compact part)")
    rows = collect(a.inputs)
    if not rows:
        raise EvidenceError(f"no runs found in {' '.join(a.inputs)}; pass run folders, grid folders or JSON parts")
    if a.export:
        write_compact(rows, a.export, {"part": a.part, "command": a.command})
        print(f"{len(rows)} runs written to {a.export}")
    if a.output:
        doc = write_evidence(rows, a.output, allow_unpaired=a.allow_unpaired, tail_tau=a.tail_tau, min_n=a.min_n,
                             n_boot=a.n_boot, commands=[" ".join(["ncprompt", *sys.argv[1:]])])
        for u in doc["unpaired"] + doc["repeated_seeds"]:
            print(f"ncprompt evidence: {u}", file=sys.stderr)
        held = sum(v["verdict"] == HELD for v in doc["verdicts"])
        kept = sum(bool(v.get("survives")) for v in doc["verdicts"])
        print(f"{doc['runs']} runs, {doc['pairs']} pairs, {len(doc['verdicts'])} claims ({held} held, {kept} after "
              f"Holm); "
              f"{Path(a.output) / 'evidence.md'}")
    return 0


__all__ = ["PairedVerdict", "Pair", "collect", "pair_runs", "decide", "correlations", "write_evidence",
           "write_compact", "read_compact", "cmd_evidence"]
