"""benchmarks/bench_whole_suite.py (issue 20): the whole suite's cells are the methods' pocket presets on the
bench's model, base-to-new (the probe: all classes), with the shared-prefix switch set as asked, one thread each,
longest first; the docs section compares the two switches. No training here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_whole_suite as ws  # noqa: E402


def _args(tmp_path, switch):
    return argparse.Namespace(methods=ws.METHODS, switch=switch, epochs=None, bench=3, seed=1, out=tmp_path)


def test_cells_are_the_presets_with_the_switch(tmp_path):
    sizes = {"b3_hands": 10, "b3_generic": 500}
    for switch in ("on", "off"):
        jobs = ws.jobs(_args(tmp_path, switch), sizes)
        assert len(jobs) == 20 and {j["threads"] for j in jobs} == {1}
        assert [j["estimate_s"] for j in jobs] == sorted((j["estimate_s"] for j in jobs), reverse=True)
        assert jobs[0]["method"] == "cocoop" and jobs[0]["dataset"] == "b3_generic"  # the longest measured
        by = {(j["method"], j["dataset"]): j["config"] for j in jobs}
        for (m, _), cfg in by.items():
            assert cfg["run"]["model"] == "pocket-b3" and cfg["train"]["shared_prefix"] is (switch == "on")
            assert cfg["data"]["protocol"] == ("all" if m == "linear_probe" else "base2new")
            assert cfg["data"]["shots"] == 16 and cfg["method"]["name"] == m
            assert cfg["run"]["cache_dir"] == str(tmp_path / "cache")
        assert by[("coop", "b3_hands")]["method"]["n_ctx"] == 16
        assert by[("kgcoop", "b3_hands")]["method"]["ctx_init"] == "an emoji of"
        assert by[("coop", "b3_hands")]["train"]["epochs"] == 100  # the preset's, not overridden
        assert all(f"runs-{switch}" in j["run_dir"] for j in jobs)


def test_section_compares_the_switches():
    def run(switch, secs, new):
        cells = [{"dataset": d, "method": m, "seconds": secs, "base": 50.0, "new": new, "hm": 40.0}
                 for d in ("a", "b") for m in ("coop", "tcp")]
        return {"bench": 3, "switch": switch, "seed": 1, "epochs": "the presets", "methods": ["coop", "tcp"],
                "datasets": {"a": 10, "b": 20}, "wall_s": 2 * secs, "cells": cells,
                "machine": {"workers": 2, "cpu": "cpu", "date": "today", "loadavg_at_start": [0.1]}}

    md = ws.section({"off": run("off", 30.0, 30.0), "on": run("on", 10.0, 30.5)})
    assert "shared prefix **off**: **60.00 s** wall for 4 cells" in md
    assert "| coop | 60" in md and "3.00x" in md and "0.50 |" in md
    assert "Not measured yet" in ws.section({})
    stopped = run("on", 10.0, 30.5)
    stopped["cells"] = stopped["cells"][:3]
    md = ws.section({"off": run("off", 30.0, 30.0), "on": stopped})
    assert "stopped after 3 of 4 cells" in md and "coop a 10" in md  # a stopped run names its cells
    assert "off / on" not in md  # and is never compared per method with a whole run
    assert "| coop |" in md  # the whole run's own totals still show
