"""``ncprompt evidence`` (issue 22): NPT runs paired with their controls by setting, unpaired runs named and
refused, each claim computed on a constructed case with a known answer, the report and figure written, the
compact JSON parts read back as the runs were, and one tiny real grid end to end. Run folders are written by the
real writers (RunFolder: config.yaml and inputs.json; write_results: results.json)."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from ncprompt.analysis.evidence import (
    EvidenceError,
    adjust_within_kinds,
    collect,
    correlation_table,
    correlations,
    decide,
    multiplicity_lines,
    pair_runs,
    parts_table,
    read_compact,
    result_row,
    summary_line,
    verdict_table,
    write_compact,
    write_evidence,
)
from ncprompt.cli import main
from ncprompt.config import RunConfig
from ncprompt.engine.results import RunResult, SplitResult, write_results
from ncprompt.engine.run_folder import RunFolder

DATASETS = [f"ds{i}" for i in range(6)]


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Content is tested here, not durability: skip the fsync of atomic writes."""
    monkeypatch.setattr("ncprompt.utils._fsync", lambda path: None)


def _run(dataset, seed, tau, npt, base, new, groups=None, nc=None, lam=None, method="coop"):
    """(config, inputs, results) of one finished base-to-new run as `ncprompt train` leaves it."""
    d = {"run": {"model": "pocket"}, "data": {"dataset": dataset, "shots": 16, "protocol": "base2new",
                                              "imbalance": tau},
         "method": {"name": method}, "train": {"epochs": 10, "seed": seed}, "npt": {"enabled": npt}}
    if lam is not None:
        d["npt"]["lambda_lc"] = lam
    cfg = RunConfig.from_dict(d)
    inputs = {"weights": "file:pocket.safetensors sha256:0123456789abcdef", "classes": f"names-{dataset}",
              "data.train": f"train-{dataset}-{seed}-{tau}", "data.test.base": f"test-{dataset}"}
    res = RunResult(method=method, npt=npt, dataset=dataset, model="pocket", protocol="base2new", seed=seed,
                    shots=16, imbalance=tau, epochs_run=10,
                    splits={"base": SplitResult(top1=base, groups=groups), "new": SplitResult(top1=new)},
                    train=SplitResult(top1=base, nc={"nc3_self_duality": nc}) if nc is not None else None,
                    info={"model": {"name": "pocket"}, "dataset": {"name": dataset}})
    return cfg, inputs, res


def row(*args, **kw):
    cfg, inputs, res = _run(*args, **kw)
    return result_row(res.to_dict(), cfg.to_dict(), inputs, None)


def folder(path, *args, **kw):
    cfg, inputs, res = _run(*args, **kw)
    with RunFolder(path).open(cfg, inputs=inputs):
        pass
    write_results(path / "results.json", res)
    return path


def hm(b, n):
    return 2 * b * n / (b + n)


def test_pairing_is_by_setting_and_seed_and_unpaired_runs_are_named(tmp_path):
    for s in (1, 2):
        folder(tmp_path / f"c{s}", "ds0", s, 0.25, False, 50.0, 40.0)
        folder(tmp_path / f"n{s}", "ds0", s, 0.25, True, 51.0, 43.0)
    folder(tmp_path / "other_tau", "ds0", 1, 1.0, True, 60.0, 50.0)  # no control at tau 1
    folder(tmp_path / "lam", "ds0", 1, 0.25, True, 52.0, 44.0, lam=2.0)  # a second NPT form: its own family
    rows = collect([tmp_path])
    pairs, unpaired = pair_runs(rows)
    # two NPT forms of CoOp: each family labelled by what tells them apart
    assert sorted((p.family, p.seed) for p in pairs) == [
        ("coop (npt.lambda_lc=0.1)", 1), ("coop (npt.lambda_lc=0.1)", 2), ("coop (npt.lambda_lc=2.0)", 1)]
    assert {p.gain("new") for p in pairs if p.family == "coop (npt.lambda_lc=0.1)"} == {3.0}
    assert len(unpaired) == 1 and "coop+npt on ds0 seed 1 tau 1" in unpaired[0] and "other_tau" in unpaired[0]
    with pytest.raises(EvidenceError, match=r"1 unpaired run\(s\): coop\+npt on ds0 seed 1 tau 1.*--allow-unpaired"):
        write_evidence(rows, tmp_path / "ev")
    doc = write_evidence(rows, tmp_path / "ev", allow_unpaired=True, n_boot=200)
    assert doc["unpaired"] == unpaired and "other_tau" in (tmp_path / "ev" / "evidence.md").read_text()


def test_the_seeds_training_sample_never_splits_a_setting():
    """Observed on a real grid: inputs.json's `portable.data.train` (the seed's sample) made each seed its own
    setting, so no two seeds pooled (tables: n = 1 rows) and every NPT pair was its own family."""
    from ncprompt.config.setting import setting_items

    cfg = RunConfig.from_dict({})
    a, b = ({"data.train": f"t{i}", "portable.data.train": f"t{i}", "data.test.base": "x"} for i in (1, 2))
    assert setting_items(cfg, a) == setting_items(cfg, b)


def test_two_versions_of_a_dataset_never_overwrite_each_other(tmp_path):
    """The same dataset name with other test images (e.g. before and after bench 3) on the same seed: two pairs of
    one cell, refused by name rather than one silently replacing the other."""
    rows = [row("ds0", 1, 0.25, npt, 50.0, 40.0 + npt) for npt in (False, True)]
    rows += [{**r, "setting": {**r["setting"], "inputs.data.test.base": "other"}, "run": f"v2/{i}"}
             for i, r in enumerate(rows)]
    with pytest.raises(EvidenceError, match="two pairs of coop on ds0 seed 1 tau 0.25 differ in their data"):
        pair_runs(rows)


def test_unpaired_runs_refused_on_the_command_line_in_one_line(tmp_path, capsys):
    folder(tmp_path / "a", "ds0", 1, 0.25, True, 51.0, 43.0)
    folder(tmp_path / "b", "ds0", 2, 0.25, False, 51.0, 43.0)  # another seed: not its control
    assert main(["evidence", str(tmp_path), "--output", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "2 unpaired run(s)" in err and "Traceback" not in err
    assert main(["evidence", str(tmp_path)]) == 2
    assert "pass --output DIR" in capsys.readouterr().err


def _grid():
    """6 datasets x 2 seeds x tau {1, 0.25, 0.06}: NPT adds (1 + 2k) base and (3 + 4k) new points, k = tau level,
    a dataset- and seed-dependent offset on both arms; at tau 0.06 head -1, middle 0, tail +2 + dataset index."""
    out = []
    for i, ds in enumerate(DATASETS):
        for s in (1, 2):
            for k, tau in enumerate((1.0, 0.25, 0.06)):
                b, n = 60.0 + i + s, 40.0 - i + 2 * s
                g = {"head": 70.0 + i, "middle": 60.0, "tail": 50.0 - s}
                gn = {"head": g["head"] - 1, "middle": 60.0, "tail": g["tail"] + 2 + i}
                out.append(row(ds, s, tau, False, b, n, groups=g if tau < 1 else None))
                out.append(row(ds, s, tau, True, b + 1 + 2 * k, n + 3 + 4 * k, groups=gn if tau < 1 else None))
    return out


def test_each_claim_has_its_known_answer():
    pairs, unpaired = pair_runs(_grid())
    assert not unpaired and len(pairs) == 36
    v = {(x["kind"], str(x.get("tau") or x.get("taus")), x.get("group")): x for x in decide(pairs, n_boot=500)}
    for k, tau in enumerate((1.0, 0.25, 0.06)):
        want = [hm(60 + i + s + 1 + 2 * k, 40 - i + 2 * s + 3 + 4 * k) - hm(60 + i + s, 40 - i + 2 * s)
                for i in range(6) for s in (1, 2)]
        hm_v = v[("hm", str(tau), None)]
        assert hm_v["mean"] == pytest.approx(sum(want) / len(want))
        assert hm_v["verdict"] == "held" and hm_v["datasets_helped"] == 6 and hm_v["n_pairs"] == 12
        assert hm_v["wilcoxon_p"] == pytest.approx(2 / 2 ** 6)  # all 6 datasets positive: the smallest p
        # three HM claims (one per tau) form the family: Holm multiplies the smallest p by 3, above 0.05
        assert hm_v["holm_p"] == pytest.approx(3 * 2 / 2 ** 6) and hm_v["family_size"] == 3
        assert not hm_v["survives"]
        new = v[("new", str(tau), None)]  # new gain - base gain = (3 + 4k) - (1 + 2k), on every pair
        assert new["mean"] == pytest.approx(2 + 2 * k) and new["ci_low"] == pytest.approx(2 + 2 * k)
    step = v[("tau", "[1.0, 0.25]", None)]
    want = [hm(60 + i + s + 3, 40 - i + 2 * s + 7) - hm(60 + i + s + 1, 40 - i + 2 * s + 3) for i in range(6)
            for s in (1, 2)]
    assert step["mean"] == pytest.approx(sum(want) / len(want)) and step["verdict"] == "held"
    assert ("tau", "[1.0, 0.06]", None) in v and ("tau", "[0.25, 0.06]", None) in v
    assert v[("group", "0.06", "head")]["mean"] == pytest.approx(-1) and \
        v[("group", "0.06", "head")]["verdict"] == "not held"
    assert v[("group", "0.06", "middle")]["verdict"] == "not held"  # no gain at all: the interval is [0, 0]
    tail = v[("group", "0.06", "tail")]
    assert tail["mean"] == pytest.approx(2 + 2.5) and tail["verdict"] == "held"
    assert tail["per_dataset"] == {f"ds{i}": pytest.approx(2 + i) for i in range(6)}
    lines = multiplicity_lines(list(v.values()))
    assert any(ln.startswith("- `hm`: 3 claims, 3 held per claim, 0 after Holm; with 6 datasets no claim")
               for ln in lines)


def test_a_held_claim_survives_holm_when_its_family_is_small_enough():
    """7 datasets all positive give p = 2 / 2^7 = 1/64: a family of 2 such claims survives Holm (2/64 < 0.05);
    two more (inconclusive) claims in the family make the smallest adjusted p 4/64 and none survives."""
    def verdict(p, word="held"):
        return {"kind": "hm", "verdict": word, "wilcoxon_p": p, "n_datasets": 7}

    two = [verdict(1 / 64), verdict(1 / 64)]
    adjust_within_kinds(two)
    assert [v["survives"] for v in two] == [True, True] and two[0]["holm_p"] == pytest.approx(2 / 64)
    assert multiplicity_lines(two) == ["- `hm`: 2 claims, 2 held per claim, 2 after Holm."]
    assert "held and survives Holm's adjustment" in summary_line({**two[0], "claim": "c", "mean": 1.0,
                                                                 "ci_low": 0.5, "ci_high": 1.5,
                                                                 "datasets_helped": 7, "n_pairs": 14})
    four = [*two, verdict(0.5, "inconclusive"), verdict(0.5, "inconclusive")]
    adjust_within_kinds(four)
    assert [v["survives"] for v in four] == [False] * 4 and four[0]["holm_p"] == pytest.approx(4 / 64)
    assert "no claim of this family can survive" in multiplicity_lines(four)[0]
    words = {"claim": "c", "mean": 1.0, "ci_low": 0.5, "ci_high": 1.5, "datasets_helped": 7, "n_pairs": 14}
    assert "held per claim, but not after Holm's adjustment" in summary_line({**four[0], **words})


def test_correlation_within_datasets_and_pooled_with_a_fixed_effect():
    """Within each dataset lower NC3 goes with higher new accuracy; the datasets' levels run the other way
    (Simpson): pooled naively the sign would flip, the fixed effect keeps the within-dataset sign."""
    rows = [row(f"ds{d}", s, 1.0, bool(s % 2), 50.0, 30.0 + 10 * d - j, nc=0.1 * j + d)
            for d in range(2) for j in range(16) for s in [j + 1]]
    corr = correlations(rows, min_n=15)
    for d in ("ds0", "ds1"):
        assert corr["new"]["per_dataset"][d]["rho"] == pytest.approx(-1.0) and corr["new"]["per_dataset"][d]["n"] == 16
    assert corr["new"]["pooled"]["r"] == pytest.approx(-1.0) and corr["new"]["pooled"]["datasets"] == 2
    short = correlations(rows[:10], min_n=15)["new"]["per_dataset"]["ds0"]
    assert short["rho"] is None and "n = 10 < 15" in short["why"]


def test_correlation_per_method_removes_a_between_methods_effect():
    """Within each method lower NC3 goes with *lower* new accuracy, but the method with the lower NC3 has the
    higher accuracy level: pooled over methods the sign flips. The per-method tables and the (dataset, method)
    fixed effect keep the within-method sign; the all-methods table shows the confounded one."""
    rows = [row(f"ds{d}", s, 1.0, bool(s % 2), 50.0, level + j, nc=nc0 + 0.01 * j, method=m)
            for d in range(2) for m, level, nc0 in (("coop", 20.0, 0.9), ("kgcoop", 40.0, 0.1))
            for j in range(16) for s in [j + 1]]
    corr = correlations(rows, min_n=15)
    assert set(corr["by_method"]) == {"coop", "kgcoop"}
    for m in ("coop", "kgcoop"):
        assert corr["by_method"][m]["new"]["per_dataset"]["ds0"]["rho"] == pytest.approx(1.0)
        assert corr["by_method"][m]["new"]["pooled"]["r"] == pytest.approx(1.0)
    assert corr["within_method"]["new"]["r"] == pytest.approx(1.0) and corr["within_method"]["new"]["datasets"] == 4
    assert corr["new"]["per_dataset"]["ds0"]["rho"] < 0  # methods mixed: the confounded sign
    md = correlation_table(corr)
    assert "**Within coop**" in md and "pooled, (dataset, method) fixed effect (4 groups" in md


def test_report_json_markdown_and_figure(tmp_path):
    doc = write_evidence(_grid(), tmp_path / "ev", n_boot=300, commands=["ncprompt evidence parts/"])
    files = {p.name for p in (tmp_path / "ev").iterdir()}
    assert files == {"evidence.json", "evidence.md", "gain_vs_tau.png"}
    assert json.loads((tmp_path / "ev" / "evidence.json").read_text())["pairs"] == doc["pairs"] == 36
    md = (tmp_path / "ev" / "evidence.md").read_text()
    for text in ("## tau 0.06\n\n**Base-to-new", "Class-imbalanced", "| NPT raises HM on coop at tau 0.25 |",
                 "NPT raises tail accuracy on coop at tau 0.06: held", "ncprompt evidence parts/", "gain_vs_tau.png",
                 "pooled, dataset fixed effect"):
        assert text in md, text
    assert (tmp_path / "ev" / "gain_vs_tau.png").stat().st_size > 5000
    assert doc["eval_splits"] == ["test"] and "**Evaluated on the test split** (`data.eval_split`)." in md
    val = [{**r, "setting": {**r["setting"], "data.eval_split": "val"}} for r in _grid()]
    assert write_evidence(val, tmp_path / "val", n_boot=100)["eval_splits"] == ["val"]
    assert "**Evaluated on the val split** (`data.eval_split`): validation numbers, for choices, not results" in (
        tmp_path / "val" / "evidence.md").read_text()


def test_compact_parts_read_back_as_the_runs(tmp_path):
    for s in (1, 2):
        folder(tmp_path / "runs" / f"c{s}", "ds0", s, 0.25, False, 50.0, 40.0 + s)
        folder(tmp_path / "runs" / f"n{s}", "ds0", s, 0.25, True, 51.0, 43.0 + s)
    assert main(["evidence", str(tmp_path / "runs"), "--export", str(tmp_path / "parts" / "p1.json"),
                 "--part", "p1", "--command", "scripts/evidence_grid.sh b2n-1"]) == 0
    direct = collect([tmp_path / "runs"])
    back = read_compact(tmp_path / "parts" / "p1.json")
    strip = lambda rs: sorted(json.dumps({k: v for k, v in r.items() if v is not None and k != "part"},  # noqa: E731
                                          sort_keys=True, default=str) for r in rs)
    assert strip(back) == strip(direct) and back[0]["part"]["part"] == "p1"
    a = write_evidence(direct, tmp_path / "a", n_boot=100)
    b = write_evidence(collect([tmp_path / "parts"]), tmp_path / "b", n_boot=100)
    assert a["verdicts"] == b["verdicts"] and "scripts/evidence_grid.sh b2n-1" in b["commands"]
    assert "| p1 | 4 | ? / ? | – | – |" in (tmp_path / "b" / "evidence.md").read_text()  # no wall time recorded
    meta = {"part": "p2", "cells": 6, "finished": 4, "complete": False, "wall_s": 1234.5,
            "machine": {"cpus": 2, "workers": 2, "torch": "2.x"}}
    write_compact(back, tmp_path / "p2.json", meta)
    write_evidence(collect([tmp_path / "p2.json"]), tmp_path / "c", n_boot=100)
    assert "| p2 | 4 | 4 / 6 (partial) | 1,234 s | cpus 2, workers 2, torch 2.x |" in (
        tmp_path / "c" / "evidence.md").read_text()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(EvidenceError, match="not an evidence part"):
        collect([tmp_path / "bad.json"])
    write_compact([], tmp_path / "empty.json")
    assert read_compact(tmp_path / "empty.json") == []


def test_parts_table_orders_parts_by_name_with_numbers_as_numbers():
    used = Counter({json.dumps({"part": n, "cells": 1, "finished": 1}, sort_keys=True): 1
                    for n in ("b2n-10", "lam1-1", "b2n-9", "b2n-1", "")})
    names = [line.split("|")[1].strip() for line in parts_table(used).splitlines()[2:]]
    assert names == ["?", "b2n-1", "b2n-9", "b2n-10", "lam1-1"]


def test_tiny_real_grid_end_to_end(tmp_path, one_thread, capsys):
    """A real pocket grid (coop and coop+npt x 2 seeds on emoji_hands, the pocket recipe at 1 epoch, 2 shots, 2
    test images per class), then `ncprompt evidence` over it, and over its exported part."""
    out = tmp_path / "grid"
    assert main(["--no-progress", "protocol", "--config", "configs/pocket_b2n.yaml", "--datasets", "emoji_hands",
                 "--methods", "coop", "coop+npt", "--seeds", "1", "2", "--shots", "2", "--epochs", "1",
                 "--output", str(out), "--set", "data.max_test_per_class=2",
                 "--set", f"run.cache_dir={tmp_path / 'cache'}"]) == 0
    # one feature build per dataset and seed, shared by CoOp and CoOp+NPT: per seed the training views and centre
    # view, plus the base and new test splits once (12 if each cell built its own)
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2 * 2 + 2
    part = tmp_path / "parts" / "tiny.json"
    assert main(["evidence", str(out), "--output", str(tmp_path / "ev"), "--n-boot", "200", "--export", str(part),
                 "--part", "tiny"]) == 0
    doc = json.loads((tmp_path / "ev" / "evidence.json").read_text())
    assert doc["pairs"] == 2 and not doc["unpaired"]
    (hm_v,) = [v for v in doc["verdicts"] if v["kind"] == "hm"]
    assert hm_v["n_pairs"] == 2 and hm_v["n_datasets"] == 1 and "one dataset" in " ".join(hm_v["notes"])
    assert "2 pairs" in capsys.readouterr().out
    assert main(["evidence", str(part), "--output", str(tmp_path / "ev2"), "--n-boot", "200"]) == 0
    assert json.loads((tmp_path / "ev2" / "evidence.json").read_text())["verdicts"] == doc["verdicts"]


def _grid_script(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "evidence_grid.py"
    spec = importlib.util.spec_from_file_location("evidence_grid", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sizes = {"big": 500, "mid": 100, "small": 10, "b3_generic": 500}
    monkeypatch.setattr("ncprompt.pocket.suite3.class_count", sizes.__getitem__)
    return mod


def test_grid_parts_fit_the_budget_keep_pairs_and_groups_together(monkeypatch):
    g = _grid_script(monkeypatch)
    a = g.options().parse_args(["list", "--datasets", "big", "mid", "small", "--budget-s", "3000"])
    parts = g.parts(a)
    assert parts == g.parts(a)  # the partition depends on the options only
    every = [c for cs in parts.values() for c in cs]
    # (3 datasets x 3 taus + DG) x seeds x methods x +-NPT
    assert len(every) == len(g.cells(a)) == (3 * 3 + 1) * 5 * 6 * 2
    where = {}
    for name, cs in parts.items():
        cost = [c["cost"] for c in cs]
        assert cost == sorted(cost, reverse=True)  # longest cells first
        assert sum(cost) <= 3000 * 2 + 1e-6 or len({(c["dataset"], c["seed"], c["tau"]) for c in cs}) == 1, name
        for c in cs:
            where.setdefault((c["kind"], c["dataset"], c["seed"], c["tau"], c["method"]), set()).add(name)
    assert all(len(v) == 1 for v in where.values())  # an NPT cell and its control always share a part
    for ds in ("small", "mid"):  # a (dataset, seed) group that fits a part is never split (one feature build)
        for seed in range(1, 6):
            assert len({n for (k, d, s, t, m), v in where.items() if (d, s) == (ds, seed) for n in v}) == 1
    assert {n.split("-")[0] for n in parts} == {"b2n", "dg"}
    no_dg = g.options().parse_args(["list", "--datasets", "small", "--no-dg"])
    assert not any(n.startswith("dg") for n in g.parts(no_dg))


def test_grid_part_of_a_custom_grid_gets_its_own_name_and_exact_command(monkeypatch):
    g = _grid_script(monkeypatch)
    seen = {}
    monkeypatch.setattr(g, "run_part", lambda a, name, part: seen.update(name=name, cmd=a.command, n=len(part)) or 0)
    argv = ["run", "b2n-1", "--datasets", "small", "--methods", "coop", "--no-dg", "--name", "b2n-extra"]
    assert g.main(argv) == 0
    assert seen["name"] == "b2n-extra" and seen["n"] == 3 * 5 * 2  # taus x seeds x +-NPT
    assert seen["cmd"] == "python scripts/evidence_grid.py " + " ".join(argv)
    assert g.main(argv[:-2]) == 0 and seen["name"] == "b2n-1"  # default: the part's own name


def test_zero_shot_is_a_reference_cell_without_an_npt_twin(monkeypatch):
    g = _grid_script(monkeypatch)
    monkeypatch.setattr("ncprompt.pocket.suite3.class_count", lambda d: 10)
    seen = {}
    monkeypatch.setattr(g, "run_part", lambda a, name, part: seen.update(jobs=g.jobs(a, part)) or 0)
    assert g.main(["run", "b2n-1", "--datasets", "b3_hands", "--methods", "zeroshot", "coop", "--no-dg", "--seeds", "1",
                   "--taus", "1", "0.06", "--npt-lambda", "1"]) == 0
    cfgs = sorted((j["config"]["method"]["name"], j["config"]["npt"]["enabled"],
                   j["config"]["data"]["imbalance"] or 1.0) for j in seen["jobs"])
    assert cfgs == [("coop", False, 0.06), ("coop", False, 1.0), ("coop", True, 0.06), ("coop", True, 1.0),
                    ("zeroshot", False, 0.06), ("zeroshot", False, 1.0)]  # one zero-shot cell per tau, no twin


def test_a_lambda_study_runs_on_validation_only_and_its_choice_is_recorded(monkeypatch, capsys):
    """--npt-lambda L1 L2 gives one NPT cell per lambda (both lambdas = L) beside one control; on the test split
    of seeds 1-5 it is refused before anything runs (a choice made on the reported numbers)."""
    g = _grid_script(monkeypatch)
    monkeypatch.setattr("ncprompt.pocket.suite3.class_count", lambda d: 10)
    seen = {}
    monkeypatch.setattr(g, "run_part", lambda a, name, part: seen.update(jobs=g.jobs(a, part), a=a) or 0)
    with pytest.raises(SystemExit, match="--split val and seeds outside 1-5"):
        g.main(["run", "b2n-1", "--datasets", "b3_hands", "--methods", "coop", "--no-dg", "--npt-lambda", "1", "7"])
    assert not seen
    assert 7.0 not in g.CHOSEN_LAMBDAS and 1.0 in g.CHOSEN_LAMBDAS  # 1: chosen on validation, so test may run it
    assert g.main(["run", "b2n-1", "--datasets", "b3_hands", "--methods", "coop", "--no-dg", "--npt-lambda", "1"]) == 0
    assert "chosen on validation data: lambda_lc = lambda_mi = 1: " in g.choices_made(seen.pop("a"))["npt"]
    with pytest.raises(SystemExit, match=r"seed\(s\) 6 chose lambda on their validation split"):
        g.main(["run", "b2n-1", "--datasets", "b3_hands", "--methods", "coop", "--no-dg", "--npt-lambda", "1",
                "--seeds", "6", "8"])  # the seeds that chose lambda do not report it on test
    assert "a" not in seen
    assert g.main(["run", "b2n-1", "--datasets", "b3_hands", "--methods", "coop", "--no-dg", "--npt-lambda", "1",
                   "--seeds", "8", "9"]) == 0  # more seeds where a verdict is close: the choice's text goes along
    assert "chosen on validation data" in g.choices_made(seen.pop("a"))["npt"]
    assert g.main(["run", "b2n-1", "--datasets", "b3_hands", "--methods", "coop", "--no-dg", "--npt-lambda", "1",
                   "10", "--split", "val", "--seeds", "6", "7", "--taus", "0.06"]) == 0
    cfgs = [j["config"] for j in seen["jobs"]]
    assert {c["data"]["eval_split"] for c in cfgs} == {"val"} and len(cfgs) == 2 * 3  # seeds x (control, 2 NPT)
    assert sorted((c["npt"]["enabled"], c["npt"].get("lambda_lc"), c["npt"].get("lambda_mi")) for c in cfgs) == [
        (False, 0.1, 0.1)] * 2 + [(True, 1.0, 1.0)] * 2 + [(True, 10.0, 10.0)] * 2  # the control: the defaults
    assert len({j["run_dir"] for j in seen["jobs"]}) == 6  # a run folder per lambda
    made = g.choices_made(seen["a"])
    assert made["split"] == "data.eval_split val" and "lambda_lc = lambda_mi = 1 / 10" in made["npt"]
    assert "seeds 6 7" in made["npt"]
    default = g.options().parse_args(["list", "--datasets", "small"])
    assert "npt" not in g.choices_made(default)  # the spec's lambdas: CHOICES' text stands


def _tiny_job(tmp_path, npt=False):
    """One real grid cell: CoOp on emoji_hands, the pocket recipe at 1 epoch, 2 shots, 2 test images per class."""
    import yaml

    from ncprompt.config import merge_layers
    from ncprompt.protocols.demo import per_method_options
    from ncprompt.protocols.grid import MethodSpec, grid_jobs

    base = yaml.safe_load(open("configs/pocket_b2n.yaml"))
    opts = per_method_options(base)
    base = merge_layers(base, {"data": {"shots": 2, "max_test_per_class": 2, "protocol": "base2new"},
                               "train": {"epochs": 1},
                               "run": {"cache_dir": str(tmp_path / "cache")}})
    spec = MethodSpec.parse("coop+npt" if npt else "coop", opts)
    (job,) = grid_jobs(base, ["emoji_hands"], [spec], [1], tmp_path / "grid")
    return {**job, "threads": 1}


def test_a_saved_row_is_reused_only_while_its_setting_weights_and_data_are_unchanged(tmp_path, monkeypatch,
                                                                                     one_thread):
    """A part's saved row stands for its cell (no run) when the cell's config, weights digest and data digests are
    the ones it would run now; any other row (here: other weights) is not trusted and the cell runs again."""
    import shutil
    from pathlib import Path

    g = _grid_script(monkeypatch)
    job = _tiny_job(tmp_path)
    first = g.cell_row(job, None)
    assert first["run"] == job["run_dir"] and first["trained"] and first["new"] is not None
    shutil.rmtree(job["run_dir"])
    assert g.cell_row(job, first) == first and not Path(job["run_dir"]).exists()  # reused: nothing ran
    stale = {**first, "new": -1.0, "setting": {**first["setting"], "inputs.weights": "file:other sha256:00"}}
    again = g.cell_row(job, stale)
    assert Path(job["run_dir"], "results.json").is_file() and again["new"] == first["new"]


def test_a_part_writes_its_rows_as_cells_finish_and_a_rerun_passes_them_back(tmp_path, monkeypatch, capsys):
    """run_part writes the compact JSON after every finished cell (interrupted: what finished is kept, marked
    incomplete), and a rerun hands each cell its saved row (cell_row decides whether it stands)."""
    import concurrent.futures as cf

    g = _grid_script(monkeypatch)
    monkeypatch.setattr("ncprompt.protocols.grid._die_with_parent", lambda parent: None)
    monkeypatch.setattr(g.cf, "ProcessPoolExecutor", cf.ThreadPoolExecutor)  # the fake cells below are local
    a = g.resolve(g.options().parse_args(["run", "b2n-1", "--datasets", "small", "--methods", "coop", "--no-dg",
                                          "--seeds", "1", "--taus", "1", "--out", str(tmp_path / "g"),
                                          "--results", str(tmp_path / "res"), "--workers", "1"]))
    a.command = "test"
    monkeypatch.setattr(g, "jobs", lambda a, part: [{"run_dir": f"{a.out}/c{i}", "cost": 1} for i in range(4)])
    seen = []

    def fake(job, row):
        seen.append((job["run_dir"], row))
        if job["run_dir"].endswith("c2") and row is None:
            raise RuntimeError("killed")
        return row or {"run": job["run_dir"], "method": "coop", "new": 1.0}

    monkeypatch.setattr(g, "cell_row", fake)
    assert g.run_part(a, "p", [{"cost": 1}] * 4) == 1
    out = capsys.readouterr().out
    assert "estimate 4 s for the 4 without" in out and f"[p] 3/4 {a.out}/c3: HM nan, 0 s; about 0 min left" in out
    assert out.count("min left") == 3  # a progress line per finished cell
    data = json.loads((tmp_path / "res" / "p.json").read_text())
    assert [r["run"] for r in data["rows"]] == [f"{a.out}/c{i}" for i in (0, 1, 3)]
    assert data["meta"]["finished"] == 3 and data["meta"]["complete"] is False and len(data["meta"]["failed"]) == 1
    # a rerun killed while it re-checks the saved rows (c0 checked, then the pool dies) keeps every saved row
    def killed(job, row):
        if not job["run_dir"].endswith("c0"):
            raise KeyboardInterrupt
        return row

    monkeypatch.setattr(g, "cell_row", killed)
    with pytest.raises(KeyboardInterrupt):
        g.run_part(a, "p", [{"cost": 1}] * 4)
    kept = json.loads((tmp_path / "res" / "p.json").read_text())
    assert [r["run"] for r in kept["rows"]] == [f"{a.out}/c{i}" for i in (0, 1, 3)] and not kept["meta"]["complete"]
    seen.clear()
    monkeypatch.setattr(g, "cell_row", lambda job, row: fake(job, row) if row else {"run": job["run_dir"]})
    capsys.readouterr()
    assert g.run_part(a, "p", [{"cost": 1}] * 4) == 0
    assert sorted(r is not None for _, r in seen) == [True, True, True]  # c2 ran, the others were handed back
    out = capsys.readouterr().out
    assert "estimate 1 s for the 1 without" in out and out.count("min left") == 1  # a reused row is silent
    done = json.loads((tmp_path / "res" / "p.json").read_text())
    assert done["meta"]["complete"] is True and len(done["rows"]) == 4
    # a saved row found stale is rerun and said so; it was never in the estimate, so it leaves the minutes alone
    monkeypatch.setattr(g, "cell_row", lambda job, row: {**row, "hm": 5.0} if job["run_dir"].endswith("c0") else row)
    assert g.run_part(a, "p", [{"cost": 1}] * 4) == 0
    out = capsys.readouterr().out
    assert "estimate 0 s for the 0 without" in out and out.count("min left") == 1
    assert f"{a.out}/c0: HM 5.00, 0 s (its saved row was stale: rerun); about 0 min left" in out
    monkeypatch.setattr(g, "cell_row", fake)
    # another part (a new lambda beside the same controls) may take p's rows: --reuse-rows hands them to its cells
    seen.clear()
    a.reuse_rows = [str(tmp_path / "res" / "p.json")]
    assert g.run_part(a, "q", [{"cost": 1}] * 4) == 0
    assert sorted(r is not None for _, r in seen) == [True] * 4
    assert len(json.loads((tmp_path / "res" / "q.json").read_text())["rows"]) == 4


def test_the_manipulation_check_reads_npt_s_drop_of_the_nc3_gap():
    """NPT lowers the NC3 gap by 0.1 on a control gap of 0.5 + 0.1 i on dataset i: the claim's mean is 0.1,
    its relative size the mean of 0.1 / gap, and the plain words give NC3 units, not points."""
    rows = []
    for i, ds in enumerate(f"ds{i}" for i in range(6)):
        for s in (1, 2):
            gap = 0.5 + 0.1 * i
            rows.append(row(ds, s, 1.0, False, 50.0, 40.0, nc=gap))
            rows.append(row(ds, s, 1.0, True, 50.0, 40.0, nc=gap - 0.1))
    pairs, _ = pair_runs(rows)
    (v,) = [x for x in decide(pairs, n_boot=200) if x["kind"] == "nc"]
    assert v["claim"] == "NPT lowers the NC3 gap on coop at tau 1" and v["verdict"] == "held"
    assert v["mean"] == pytest.approx(0.1) and v["datasets_helped"] == 6
    assert v["relative"] == pytest.approx(sum(0.1 / (0.5 + 0.1 * i) for i in range(6)) / 6)
    line = summary_line(v)
    assert "mean +0.1 NC3 units, " in line and "of the control's gap" in line and "points" not in line
    assert "| +0.1 (" in verdict_table([v])


def test_a_control_listed_in_two_parts_is_one_run_but_a_differing_repeat_is_named():
    from ncprompt.analysis.runs import drop_repeated_seeds

    a = {**row("ds0", 1, 1.0, False, 50.0, 40.0), "run": "runs/tau1.0/coop/ds0/coop/seed1"}
    kept, warnings = drop_repeated_seeds([a, dict(a)])
    assert kept == [a] and warnings == []  # the same folder, the same results: read twice, counted once
    other = {**a, "base": 51.0}
    kept, warnings = drop_repeated_seeds([a, other])
    assert kept == [a] and len(warnings) == 1 and "counted once" in warnings[0]
    moved = {**a, "run": "elsewhere/seed1"}
    assert len(drop_repeated_seeds([a, moved])[1]) == 1  # another folder with the same setting and seed: named


def test_verdicts_do_not_depend_on_the_string_hash_seed():
    """Differences were summed in a set's order, so a report's means changed in their last bit between runs."""
    import subprocess
    import sys

    code = ("import json, sys; sys.path.insert(0, 'tests'); import test_evidence as t; "
            "from ncprompt.analysis.evidence import decide, pair_runs; "
            "print(json.dumps(decide(pair_runs(t._grid())[0], n_boot=50), sort_keys=True))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2, 3)}
    assert len(outs) == 1
