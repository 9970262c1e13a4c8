"""Tables and reports never pool unlike runs (issue 19, section 2): one setting key from the resolved config,
a repeated seed counted once and named, numeric order, the linear probe's shots kept, report families and
no r below n = 5. Run folders are written by the real writers (RunFolder: config.yaml and inputs.json;
write_results: results.json)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ncprompt.analysis.correlation import collect_runs, correlation_table, write_report
from ncprompt.analysis.tables import Cell, all_tables, collect_rows, few_shot_table, main
from ncprompt.config import RunConfig
from ncprompt.config.setting import setting_items, setting_key
from ncprompt.engine.results import RunResult, SplitResult, write_results
from ncprompt.engine.run_folder import RunFolder

UNTRAINED = ("zeroshot", "linear_probe")


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Content is tested here, not durability: skip the fsync of atomic writes."""
    monkeypatch.setattr("ncprompt.utils._fsync", lambda path: None)


def fake_run(path, top1, *, method="coop", seed=1, dataset="digits", shots=4, protocol="all", nc1=None,
             options=None, **sections):
    """A finished run folder as `ncprompt train` leaves it: config.yaml and inputs.json (RunFolder), results.json.
    ``options``: method options; ``sections``: data/train/npt overrides; the test split's digest follows the
    test cap, as in a run."""
    d = {"run": {"model": "pocket"}, "data": {"dataset": dataset, "shots": shots, "protocol": protocol},
         "method": {"name": method, **(options or {})}, "train": {"epochs": 10, "seed": seed}}
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    cfg = RunConfig.from_dict(d)
    cap = cfg.data.max_test_per_class
    inputs = {"weights": "file:pocket.safetensors:abcd sha256:0123456789abcdef", "classes": f"names-{dataset}",
              "data.train": f"train-{seed}-{shots}", "data.test.all": f"test-{dataset}-{cap}"}
    with RunFolder(path).open(cfg, inputs=inputs):
        pass
    split = SplitResult(top1=top1)
    train = SplitResult(top1=top1, nc={"nc1": nc1}) if nc1 is not None else None
    res = RunResult(method=method, npt=cfg.npt.enabled, dataset=dataset, model="pocket", protocol=protocol, seed=seed,
                    shots=shots, epochs_run=0 if method in UNTRAINED else cfg.train.epochs,
                    splits={"all": split} if protocol == "all" else {"base": split, "new": SplitResult(top1=top1)},
                    train=train, info={"model": {"name": "pocket"}, "dataset": {"name": dataset}})
    write_results(path / "results.json", res)
    return path


def _table_rows(t, method):
    """Rows of ``method`` (a method id; tables show its display name) other than averages."""
    from ncprompt.analysis.names import display_name

    return [r for r in t.rows if r[1] == display_name(method) and not str(r[0]).startswith("Average")]


def _col(t, name):
    return t.header.index(name)


def _only(tables, name):
    (t,) = [t for t in tables if t.name == name]
    return t


def test_setting_key_leaves_out_the_seed_and_bookkeeping_only():
    a = RunConfig.from_dict({"train": {"seed": 1}, "run": {"output": "/x", "cache_dir": "/c", "device": "cpu"},
                             "data": {"workers": 2}})
    b = RunConfig.from_dict({"train": {"seed": 2}})
    assert setting_key(setting_items(a)) == setting_key(setting_items(b))
    for change in ({"train": {"flip": False}}, {"method": {"name": "coop", "n_ctx": 4}}, {"data": {"shots": 8}},
                   {"data": {"max_test_per_class": 30}}, {"npt": {"enabled": True}}, {"run": {"precision": "bf16"}}):
        assert setting_key(setting_items(RunConfig.from_dict(change))) != setting_key(setting_items(b)), change
    # randomly initialised weights are drawn from the seed: no digest; real weights: their digest, not their path
    rand1, rand2 = ({"data.train": f"x{i}", "weights": f"random-init sha256:{i}"} for i in (1, 2))
    assert setting_items(b, rand1) == setting_items(b, rand2)  # the sampled training images are the seed's too
    assert setting_items(b, {"weights": "f sha256:1"})["inputs.weights"] != setting_items(
        b, {"weights": "f sha256:2"})["inputs.weights"]


def test_augmentation_runs_are_two_rows_labelled_by_what_differs(tmp_path):
    """Observed: CoOp with default augmentation (34.7) and with --no-flip --crop-min 0.5 (52.5), both seed 1, in
    one row 43.60 ± 12.59."""
    fake_run(tmp_path / "a", 34.7)
    fake_run(tmp_path / "b", 52.5, train={"flip": False, "crop_min": 0.5})
    t = _only(all_tables(collect_rows([tmp_path])), "accuracy")
    rows = _table_rows(t, "coop")
    assert len(rows) == 2
    top1, setting = _col(t, "Top-1"), _col(t, "Setting")
    got = {r[setting]: r[top1] for r in rows}
    assert got["crop_min=0.08, flip=True"] == Cell(34.7, None, 1)
    assert got["crop_min=0.5, flip=False"] == Cell(52.5, None, 1)
    assert "crop_min=0.5, flip=False" in t.markdown() and "12.59" not in t.markdown()


def test_a_repeated_seed_is_counted_once_and_named(tmp_path, capsys):
    """Observed: the same seed counted several times (a run copied or repeated in two folders) as n=3, std 0."""
    run = fake_run(tmp_path / "runs" / "a" / "seed1", 40.0)
    shutil.copytree(run, tmp_path / "runs" / "b" / "seed1")
    shutil.copytree(run, tmp_path / "runs" / "c" / "seed1")
    fake_run(tmp_path / "runs" / "a" / "seed2", 44.0, seed=2)
    assert main([str(tmp_path / "runs"), "--output", str(tmp_path / "t")]) == 0
    cap = capsys.readouterr()
    (row,) = _table_rows(_only(all_tables(collect_rows([tmp_path / "runs"])), "accuracy"), "coop")
    assert row[-1] == Cell(42.0, pytest.approx(2 * 2 ** 0.5), 2)  # seeds 1 and 2, not n = 4
    for where in (cap.err, (tmp_path / "t" / "accuracy.md").read_text()):
        assert "seed 1 of coop on digits" in where and "3 runs" in where and "counted once" in where
        assert all(str(tmp_path / "runs" / x / "seed1") in where for x in "abc")
    assert "ncprompt tables: warning:" in cap.err


def test_zero_shot_templates_are_three_rows(tmp_path):
    """Observed: zero-shot runs with three templates (`a photo of a {}.`, `{} emoji`, the ensemble) in one row."""
    for i, tpl in enumerate(["a photo of a {}.", "{} emoji", "ensemble"]):
        fake_run(tmp_path / f"zs{i}", 30.0 + i, method="zeroshot", options={"templates": tpl})
    t = _only(all_tables(collect_rows([tmp_path])), "accuracy")
    rows = _table_rows(t, "zeroshot")
    assert sorted(r[_col(t, "Setting")] for r in rows) == ["templates=a photo of a {}.", "templates=ensemble",
                                                           "templates={} emoji"]
    assert all(r[-1].n == 1 for r in rows)


def test_linear_probe_keeps_its_shots(tmp_path):
    """Observed: the 2-shot (52.4) and 8-shot (77.0) probes appear as 64.70 ± 14.99 in both columns (epochs_run 0
    read as untrained)."""
    fake_run(tmp_path / "lp2", 52.4, method="linear_probe", shots=2)
    fake_run(tmp_path / "lp8", 77.0, method="linear_probe", shots=8)
    fake_run(tmp_path / "zs", 40.0, method="zeroshot", shots=2)
    rows = collect_rows([tmp_path])
    assert sorted(r["shots"] for r in rows if r["method"] == "linear_probe") == [2, 8]
    t = few_shot_table(rows)
    assert t.header[-2:] == ["2 shots", "8 shots"]
    (lp,) = _table_rows(t, "linear_probe")
    assert lp[-2:] == [Cell(52.4, None, 1), Cell(77.0, None, 1)]
    (zs,) = _table_rows(t, "zeroshot")  # zero-shot reads no training images: the same in every column
    assert [c.mean for c in zs[-2:]] == [40.0, 40.0]


def test_test_caps_are_rows_of_their_own_and_epochs_sort_numerically(tmp_path):
    """Observed: a run on the full test set and one with max_test_per_class 30 pooled; epochs sort as strings
    (10, 1000, 2, 200)."""
    fake_run(tmp_path / "full", 60.0)
    fake_run(tmp_path / "cap", 70.0, data={"max_test_per_class": 30})
    for e in (1000, 2, 200):
        fake_run(tmp_path / f"e{e}", float(e % 97), train={"epochs": e})
    t = _only(all_tables(collect_rows([tmp_path])), "accuracy")
    rows = _table_rows(t, "coop")
    assert [r[_col(t, "Epochs")] for r in rows] == ["2", "10", "10", "200", "1000"]
    ten = {r[_col(t, "Setting")]: r[-1].mean for r in rows if r[_col(t, "Epochs")] == "10"}
    assert ten == {"max_test_per_class=None": 60.0, "max_test_per_class=30": 70.0}


def test_a_mixed_folder_gives_one_row_per_setting(tmp_path, capsys):
    """Every case above in one folder: each setting is one row; only the seeds of one setting pool."""
    fake_run(tmp_path / "coop" / "s1", 34.7)
    fake_run(tmp_path / "coop" / "s2", 36.7, seed=2)
    shutil.copytree(tmp_path / "coop" / "s1", tmp_path / "copy" / "s1")
    fake_run(tmp_path / "aug", 52.5, train={"flip": False, "crop_min": 0.5})
    fake_run(tmp_path / "cap", 70.0, data={"max_test_per_class": 30})
    fake_run(tmp_path / "e2", 20.0, train={"epochs": 2})
    for i, tpl in enumerate(["a photo of a {}.", "{} emoji", "ensemble"]):
        fake_run(tmp_path / f"zs{i}", 30.0 + i, method="zeroshot", options={"templates": tpl})
    fake_run(tmp_path / "lp2", 52.4, method="linear_probe", shots=2)
    fake_run(tmp_path / "lp8", 77.0, method="linear_probe", shots=8)
    assert main([str(tmp_path), "--output", str(tmp_path / "out")]) == 0
    (t,) = all_tables(collect_rows([tmp_path]))
    assert t.name == "few_shot"  # shots 2, 4, 8: shots are the columns, so a row is a setting but its shots
    rows = [r for r in t.rows if r[0] == "digits"]
    labels = [(r[1], *r[2:_col(t, "n")]) for r in rows]
    assert len(labels) == len(set(labels)) == 4 + 3 + 1  # coop x4 settings, zero-shot x3 templates, the probe
    n = {lab: r[_col(t, "n")] for lab, r in zip(labels, rows)}
    assert sorted(n.values()) == ["1"] * 7 + ["2"]  # the copy of seed 1 is not a third seed
    assert "counted once" in capsys.readouterr().err


def _report_runs(tmp_path):
    """Family pocket/digits/all/4 shots: 5 seeds (r defined); then 2 runs each at 8 shots, base2new, another
    dataset, and 2 more epochs settings of the main family."""
    rng = np.random.default_rng(0)
    root = tmp_path / "runs"
    for s in range(1, 6):
        x = float(rng.uniform(0, 1))
        fake_run(root / f"main{s}", 50 + 10 * x, seed=s, nc1=x)
    for s in (1, 2):
        fake_run(root / f"shots8-{s}", 80.0 + s, seed=s, shots=8, nc1=0.1 * s)
        fake_run(root / f"b2n-{s}", 60.0 + s, seed=s, protocol="base2new", nc1=0.2 * s)
        fake_run(root / f"other-{s}", 20.0 + s, seed=s, dataset="letters", nc1=0.3 * s)
    return root


def test_report_correlates_within_one_family_and_not_below_five_runs(tmp_path):
    """Observed: `report` correlated runs that differ in shots, epochs, protocol and dataset, printed r and p from
    n = 2 and drew n = 2 scatter plots."""
    rows = collect_runs([_report_runs(tmp_path)])
    table = correlation_table(rows)
    fams = {e["family"]: e for e in table if e["accuracy"] == "acc_all" or e["accuracy"] == "acc_base"}
    assert set(fams) == {"pocket · digits · all · 4 shots", "pocket · digits · all · 8 shots",
                         "pocket · digits · base2new · 4 shots", "pocket · letters · all · 4 shots"}
    main_fam = fams["pocket · digits · all · 4 shots"]
    assert main_fam["n"] == 5 and main_fam["pearson"] is not None
    for name, e in fams.items():
        if name != "pocket · digits · all · 4 shots":
            assert e["n"] == 2 and e["pearson"] is None and e["pearson_p"] is None
            assert e["note"] == "n = 2 < 5: too few runs for r and p"
    out = write_report(rows, tmp_path / "report")
    assert out["plots"] == ["correlations_pocket_digits_all_4_shots_all.png"]  # no n = 2 scatter
    saved = json.loads((tmp_path / "report" / "correlations.json").read_text())
    assert saved["min_n"] == 5 and any(e["note"].startswith("n = 2 < 5") for e in saved["table"])
    md = (tmp_path / "report" / "correlations.md").read_text()
    assert "## pocket · letters · all · 4 shots" in md and "n = 2 < 5: too few runs for r and p" in md
    # asked to pool: one family per model over all 11 runs
    pooled = correlation_table(rows, pool=True)
    assert {e["family"] for e in pooled} == {"pocket (pooled)"}
    assert {e["n"] for e in pooled if e["accuracy"] == "acc_all"} == {9}  # the base2new runs have no all split


def test_report_command_pool_flag_and_repeated_seed(tmp_path, capsys):
    from ncprompt.cli import main as cli

    root = _report_runs(tmp_path)
    shutil.copytree(root / "main1", root / "again" / "main1")
    assert cli(["report", str(root), "--output", str(tmp_path / "r")]) == 0
    cap = capsys.readouterr()
    assert "counted once" in cap.err and "| 5 |" in cap.out
    assert json.loads((tmp_path / "r" / "correlations.json").read_text())["repeated_seeds"]
    assert cli(["report", str(root), "--output", str(tmp_path / "p"), "--pool"]) == 0
    assert json.loads((tmp_path / "p" / "correlations.json").read_text())["pooled"] is True


def test_an_unreadable_inputs_file_is_one_line_naming_it(tmp_path, capsys):
    from ncprompt.cli import main as cli

    run = fake_run(tmp_path / "r", 40.0)
    (run / "inputs.json").write_text("{not json")
    assert cli(["tables", str(tmp_path), "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run / 'inputs.json'} cannot be read" in err


def test_seeds_of_a_dataset_drawn_from_the_run_seed_pool(tiny_backbone, fmnist_arrays, monkeypatch):
    """Pocket bench 3 draws its images from the run's seed, so each seed's test split has its own digest; those
    digests are the seed's (inputs.json marks ``data.seed: train.seed``) and seeds 1 and 2 share one setting.
    A dataset with its own data seed keeps its test digest in the setting (other test images: another setting)."""
    from ncprompt.config.setting import DATA_SEED_FOLLOWS
    from ncprompt.data import DATASETS
    from ncprompt.data.base import ArrayImages, DatasetSplits
    from ncprompt.protocols.experiment import Experiment

    a = fmnist_arrays

    def build(root=None, seed: int = 0) -> DatasetSplits:
        rng = np.random.default_rng(seed)
        tr = np.concatenate([rng.choice(np.flatnonzero(a["train_y"] == k), 8, replace=False) for k in range(3)])
        te = np.concatenate([rng.choice(np.flatnonzero(a["test_y"] == k), 5, replace=False) for k in range(3)])
        train, test = ArrayImages(a["train_x"][tr], a["train_y"][tr]), ArrayImages(a["test_x"][te], a["test_y"][te])
        return DatasetSplits("seedy", ["t-shirt", "trouser", "pullover"], train, test)

    def own_seed(root=None, seed: int = 0) -> DatasetSplits:
        return build(root, seed)

    build.data_seed_follows_run = True
    monkeypatch.setitem(DATASETS._items, "seedy", build)
    monkeypatch.setitem(DATASETS._items, "own_seed", own_seed)

    def items(dataset: str, seed: int, options=None) -> dict:
        cfg = RunConfig.from_dict({"run": {"model": "tiny-clip", "use_cache": False},
                                   "data": {"dataset": dataset, "shots": 2, "options": options or {}},
                                   "method": {"name": "zeroshot"}, "train": {"seed": seed}})
        ins = Experiment(cfg, backbone=tiny_backbone).inputs()
        return ins, setting_items(cfg, ins)

    (i1, s1), (i2, s2) = items("seedy", 1), items("seedy", 2)
    assert i1["data.seed"] == DATA_SEED_FOLLOWS and i1["data.test.all"] != i2["data.test.all"]
    assert setting_key(s1) == setting_key(s2) and s1["inputs.classes"] == i1["classes"]
    # a pinned data seed (data.options.seed) is no longer the run's: its digests are part of the setting
    (p1, q1), (_, q2) = items("seedy", 1, {"seed": 5}), items("seedy", 2, {"seed": 5})
    assert "data.seed" not in p1 and setting_key(q1) == setting_key(q2) and "inputs.data.test.all" in q1
    # a builder with its own data seed: same images for every run seed, digests kept
    (o1, t1), (_, t2) = items("own_seed", 1), items("own_seed", 2)
    assert "data.seed" not in o1 and "inputs.data.test.all" in t1 and setting_key(t1) == setting_key(t2)
