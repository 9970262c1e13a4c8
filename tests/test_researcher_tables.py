"""Paper tables: grouping never pools models or settings, n is shown, averages and HM are the
papers', the LaTeX is a well-formed booktabs table, few-shot and transfer layouts pivot right."""

from __future__ import annotations

import csv
import io
import re

import pytest

from ncprompt.analysis.names import display_name
from ncprompt.analysis.tables import (
    Cell,
    base_to_new_table,
    few_shot_table,
    long_tail_table,
    run_row,
    transfer_table,
    write_paper_tables,
)


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Content is tested here, not durability: skip the fsync of atomic writes (seconds each on a busy disk)."""
    monkeypatch.setattr("ncprompt.utils._fsync", lambda path: None)


def _row(ds, model, method, seed, base, new, shots=16, epochs=50, **kw):
    trained = method != "zeroshot"
    return {"dataset": ds, "model": model, "method": method, "shots": shots if trained else None, "tau": None,
            "epochs": epochs if trained else None, "options": "n_ctx=4" if trained else "", "protocol": "base2new",
            "seed": seed, "base": base, "new": new, "hm": 2 * base * new / (base + new) if base + new else 0.0, **kw}


ROWS = [
    _row("my_digits", "pocket", "zeroshot", 1, 80.0, 70.0),
    _row("my_digits", "pocket", "coop", 1, 90.0, 60.0),
    _row("my_digits", "pocket", "coop", 2, 92.0, 64.0),
    _row("textiles", "pocket", "zeroshot", 1, 50.0, 40.0),
    _row("textiles", "pocket", "coop", 1, 70.0, 30.0),
    _row("textiles", "pocket", "coop", 2, 60.0, 34.0),
    _row("my_digits", "ViT-B-16", "coop", 1, 10.0, 10.0),  # another model: never pooled with pocket
]


def _cells(t, dataset, method, model=None):
    mi = t.header.index("Model") if "Model" in t.header else None
    return [r for r in t.rows if r[0] == dataset and r[1] == display_name(method) and (model is None or r[mi] == model)]


def test_groups_by_model_and_method_with_n_and_std():
    t = base_to_new_table(ROWS)
    assert t.header == ["Dataset", "Method", "Model", "n", "Base", "New", "HM"]  # model varies: shown
    (coop,) = _cells(t, "my_digits", "coop", "pocket")
    base = coop[4]
    assert base.mean == pytest.approx(91.0) and base.std == pytest.approx(2 ** 0.5) and base.n == 2
    assert coop[3] == "2"
    # HM of the mean base and new, as published tables
    assert coop[6].mean == pytest.approx(2 * 91 * 62 / (91 + 62))
    (vit,) = _cells(t, "my_digits", "coop", "ViT-B-16")
    assert vit[4].mean == pytest.approx(10.0) and vit[4].std is None
    md = t.markdown()
    assert "**91.00** ± 1.41" in md and "| ViT-B-16 |" in md


def test_average_rows_per_group_and_partial_groups_flagged():
    t = base_to_new_table(ROWS)
    avg = [r for r in t.rows if str(r[0]).startswith("Average")]
    (pocket_coop,) = [r for r in avg if r[1] == "CoOp" and r[2] == "pocket"]
    assert pocket_coop[0] == "Average"
    assert pocket_coop[4].mean == pytest.approx((91 + 65) / 2) and pocket_coop[5].mean == pytest.approx((62 + 32) / 2)
    b, n = pocket_coop[4].mean, pocket_coop[5].mean
    assert pocket_coop[6].mean == pytest.approx(2 * b * n / (b + n))
    (vit,) = [r for r in avg if r[2] == "ViT-B-16"]
    assert vit[0] == "Average (1/2 datasets)"


def test_single_model_hides_constant_columns_and_keeps_user_dataset_names():
    t = base_to_new_table([r for r in ROWS if r["model"] == "pocket"])
    assert t.header == ["Dataset", "Method", "n", "Base", "New", "HM"]
    assert {r[0] for r in t.rows} == {"my_digits", "textiles", "Average"}
    varied = [dict(r, epochs=100) if r["seed"] == 2 else r for r in ROWS if r["model"] == "pocket"]
    assert "Epochs" in base_to_new_table(varied).header  # settings that vary are columns, not pooled


def test_latex_is_booktabs_with_consistent_columns():
    t = base_to_new_table(ROWS)
    tex = t.latex()
    lines = tex.splitlines()
    assert lines[0] == "\\begin{table}[t]" and lines[-1] == "\\end{table}"
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    assert spec == "llllrrr"
    i, j = lines.index("\\toprule"), lines.index("\\bottomrule")
    assert lines[i + 2] == "\\midrule" and lines[j + 1] == "\\end{tabular}"
    body = [x for x in lines[i + 1 : j] if x.endswith("\\\\")]
    assert len(body) == 1 + len(t.rows)
    assert all(x.count(" & ") == len(spec) - 1 for x in body)
    assert tex.count("\\midrule") == 1 + len(t.blocks) - 1
    assert "my\\_digits" in tex and "{\\scriptsize$\\pm$1.41}" in tex and "\\textbf{" in tex
    assert "\\caption{Base-to-new generalisation (top-1 \\%)}" in tex


def test_csv_has_mean_std_n_columns_and_full_dataset_names():
    t = base_to_new_table(ROWS)
    rows = list(csv.DictReader(io.StringIO(t.csv())))
    assert {"Base", "Base_std", "Base_n"} <= set(rows[0])
    assert all(r["Dataset"] for r in rows)  # never blank in CSV
    coop = next(r for r in rows if r["Dataset"] == "my_digits" and r["Method"] == "CoOp" and r["Model"] == "pocket")
    assert float(coop["Base"]) == pytest.approx(91.0) and coop["Base_n"] == "2"


def test_few_shot_pivots_shots_into_columns():
    rows = [dict(_row("d", "pocket", "coop", s, 50.0 + k, 0.0, shots=k), all=50.0 + k + s)
            for k in (1, 2, 4) for s in (1, 2)] + [dict(_row("d", "pocket", "zeroshot", 1, 0, 0), all=40.0)]
    t = few_shot_table(rows)
    assert t.header[-3:] == ["1 shots", "2 shots", "4 shots"]
    (coop,) = _cells(t, "d", "coop")
    assert [c.mean for c in coop[-3:]] == [52.5, 53.5, 55.5] and coop[-1].n == 2
    (zs,) = _cells(t, "d", "zeroshot")
    assert [c.mean for c in zs[-3:]] == [40.0] * 3


def test_transfer_and_long_tail_layouts():
    rows = [{**_row("src", "pocket", "coop", s, 0, 0), "base": None, "new": None, "all": 80.0 + s,
             "target:sketch=/data/s": 40.0 + s, "target:v2": 60.0} for s in (1, 2)]
    t = transfer_table(rows)
    assert t.header[-4:] == ["Source", "sketch", "v2", "Target avg."]
    assert t.rows[0][-1].mean == pytest.approx((41.5 + 60) / 2)
    lt = long_tail_table([{**r, "base_head": 90.0, "base_middle": 70.0, "base_tail": 50.0} for r in ROWS[:3]])
    assert lt.header[-4:] == ["Overall", "Head", "Middle", "Tail"]


def test_run_row_from_results_and_writing(tmp_path):
    res = {"method": "coop", "npt": True, "dataset": "digits", "model": "ViT-B-16",
           "info": {"model": {"name": "pocket"}}, "protocol": "base2new", "seed": 1, "shots": 16, "imbalance": 0.25,
           "epochs_run": 10,
           "base": {"top1": 80.0, "groups": {"head": 90.0, "middle": 80.0, "tail": 70.0}}, "new": {"top1": 60.0},
           "hm": 68.57}
    row = run_row(res, {"method_options": {"n_ctx": 4}, "npt": {"lambda_lc": 0.1}})
    assert row["model"] == "pocket" and row["method"] == "coop+npt" and row["tau"] == 0.25
    assert row["options"] == "n_ctx=4, npt.lambda_lc=0.1" and row["base_tail"] == 70.0
    zs = run_row({**res, "method": "zeroshot", "npt": False, "epochs_run": 0, "imbalance": None})
    assert zs["shots"] is None and zs["epochs"] is None and zs["options"] == ""
    # under class imbalance the shots (n_max) shape zero-shot's head/middle/tail groups, so they stay
    assert run_row({**res, "method": "zeroshot", "npt": False, "epochs_run": 0})["shots"] == 16
    files = write_paper_tables([row, zs], tmp_path)
    assert {p.name for p in files} >= {"base_to_new.md", "base_to_new.csv", "base_to_new.tex", "long_tail.tex"}
    assert Cell.of([1.0, 3.0]).std == pytest.approx(2 ** 0.5)


def test_tables_command_on_run_folders(tmp_path, capsys):
    import json

    from ncprompt.analysis.tables import main

    for seed, (b, n) in enumerate([(80.0, 60.0), (82.0, 62.0)], 1):
        d = tmp_path / "grid" / "digits" / "coop" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "method": "coop", "npt": False, "dataset": "digits", "model": "pocket", "protocol": "base2new",
            "seed": seed, "shots": 16, "epochs_run": 10, "base": {"top1": b}, "new": {"top1": n}}))
        (d / "config.yaml").write_text("method:\n  name: coop\n  n_ctx: 4\n")
    assert main([str(tmp_path / "grid"), "--output", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "| digits | CoOp | 2 | 81.00 ± 1.41 | 61.00 ± 1.41 |" in out
    assert (tmp_path / "t" / "base_to_new.tex").is_file()
    assert main([str(tmp_path / "empty")]) == 2


def test_validation_scored_runs_are_labelled_never_passed_for_test():
    from ncprompt.analysis.runs import ROW_FIELDS

    def with_split(r, split):
        return {**r, "setting": {**{k: r[k] for k in ROW_FIELDS if r.get(k) not in (None, "")},
                                 "data.eval_split": split}}

    pocket = [r for r in ROWS if r["model"] == "pocket"]
    assert not any("VALIDATION" in n for n in base_to_new_table([with_split(r, "test") for r in pocket]).notes)
    t = base_to_new_table([with_split(r, "val") for r in pocket])
    assert t.notes[0].startswith("Scored on the VALIDATION split")
    mixed = base_to_new_table([with_split(r, "val" if r["seed"] == 1 else "test") for r in pocket])
    assert "4 of 6 runs are scored on the VALIDATION split" in mixed.notes[0]
    assert "VALIDATION" in mixed.markdown()
