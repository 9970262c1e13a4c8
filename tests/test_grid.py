"""Protocol grids: tables with mean ± std over seeds, resume by skipping finished runs, processes."""

from __future__ import annotations

import csv

import pytest

from ncprompt.protocols.grid import MethodSpec, grid_jobs, run_grid, summarise


@pytest.fixture()
def grid_base(image_folder, tmp_path):
    # CPU: the grid's cells compared bit for bit across worker layouts (a GPU's kernels need not replay)
    return {"model": "tiny-clip", "device": "cpu", "dataset": "folder", "root": str(image_folder),
            "protocol": "base2new",
            "shots": 2, "cache_dir": str(tmp_path / "cache"), "dataset_options": {"test_fraction": 0.5},
            "method_options": {"n_ctx": 2}, "train": {"epochs": 2, "views": 1, "batch_size": 2}}


def test_grid_tables_resume_and_workers(grid_base, tmp_path):
    methods = [MethodSpec.parse(m) for m in ("zeroshot", "coop", "coop+npt")]
    out = tmp_path / "grid"
    rows = run_grid(grid_base, ["folder"], methods, [1, 2], out, log=lambda s: None)
    assert len(rows) == 6
    summary = {(s["dataset"], s["method"]): s for s in summarise(rows)}
    coop = [r for r in rows if r["method"] == "coop"]
    assert summary[("folder", "coop")]["base"] == pytest.approx(sum(r["base"] for r in coop) / 2)
    assert ("average", "coop+npt") in summary
    assert "±" in (out / "summary.md").read_text() or all(r["base"] == coop[0]["base"] for r in coop)
    assert (out / "summary.png").stat().st_size > 1000
    with open(out / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    # finished runs are skipped: their results files are not rewritten
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    run_grid(grid_base, ["folder"], methods, [1, 2], out, log=lambda s: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamp
    # two worker processes give the same numbers as one
    rows2 = run_grid(grid_base, ["folder"], methods, [1, 2], tmp_path / "grid2", workers=2, log=lambda s: None)
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    assert [(key(r), r["base"], r["new"]) for r in sorted(rows, key=key)] == \
        [(key(r), r["base"], r["new"]) for r in sorted(rows2, key=key)]


def test_method_spec_parsing():
    assert MethodSpec.parse("coop+npt").npt and MethodSpec.parse("coop+npt").method == "coop"
    with pytest.raises(ValueError, match="npt"):
        MethodSpec.parse("coop+xyz")


def test_few_shot_sweep_and_targets(grid_base, image_folder, tmp_path):
    base = {**grid_base, "protocol": "all", "targets": [f"folder={image_folder}"], "max_test_per_class": 2}
    rows = run_grid(base, ["folder"], [MethodSpec.parse("coop")], [1], tmp_path / "g", shots=[1, 2],
                    log=lambda s: None)
    assert sorted(r["shots"] for r in rows) == [1, 2]
    assert all(f"target:folder={image_folder}" in r for r in rows)
    names = [s["dataset"] for s in summarise(rows)]
    assert "folder (1 shots)" in names and "folder (2 shots)" in names


def test_example_configs_are_valid():
    from pathlib import Path

    from ncprompt.config import RunConfig, load_yaml
    from ncprompt.protocols.demo import per_method_options

    root = Path(__file__).parents[1] / "configs"
    cfg = RunConfig.from_dict(load_yaml(root / "coop_npt.yaml"))
    assert cfg.npt.enabled and cfg.data.imbalance == 0.25 and cfg.method.ctx_init == "" and cfg.method.n_ctx == 16
    for f in root.glob("*.yaml"):  # grid bases: per_method options are validated per cell
        base = load_yaml(f)
        options = per_method_options(base)
        jobs = grid_jobs(base, ["emoji_food"], [MethodSpec.parse("coop+npt", options)], [1],
                         Path("/nonexistent-grid"))
        assert jobs[0]["config"]["method"]["name"] == "coop"


def test_grid_cells_are_deduplicated(grid_base, tmp_path):
    methods = [MethodSpec.parse(m) for m in ("coop", "coop+npt", "coop")]
    jobs = grid_jobs(grid_base, ["folder", "folder"], methods, [1, 2, 1], tmp_path / "g")
    assert len(jobs) == 4 and len({j["run_dir"] for j in jobs}) == 4


def test_grid_rerun_with_other_settings_is_refused_before_running(grid_base, tmp_path):
    from ncprompt.config import ConfigError, RunConfig
    from ncprompt.engine.run_folder import RunFolder

    job = grid_jobs(grid_base, ["folder"], [MethodSpec.parse("coop")], [1], tmp_path / "g")[0]
    RunFolder(job["run_dir"]).prepare(RunConfig.from_dict(job["config"]))  # a cell started with 2 epochs
    other = {**grid_base, "train": {**grid_base["train"], "epochs": 3}}
    with pytest.raises(ConfigError, match=r"train\.epochs 2 -> 3.*--no-resume"):
        run_grid(other, ["folder"], [MethodSpec.parse("coop")], [1], tmp_path / "g")
    assert not (tmp_path / "g" / "grid.log").exists()  # refused before anything ran
    assert len(grid_jobs(other, ["folder"], [MethodSpec.parse("coop")], [1], tmp_path / "g", resume=False)) == 1


def test_grid_refuses_an_unknown_dataset_before_running(grid_base, tmp_path):
    from ncprompt.data import DataError

    with pytest.raises(DataError, match="unknown dataset 'pocket_garments'.*=ROOT"):
        grid_jobs(grid_base, ["folder", "pocket_garments"], [MethodSpec.parse("coop")], [1], tmp_path / "g")
    assert not (tmp_path / "g").exists()
