"""`ncprompt analyze` and `ncprompt report` on real run folders."""

from __future__ import annotations

import csv
import json

import numpy as np
from scipy.stats import pearsonr, spearmanr

from ncprompt.analysis.correlation import collect_runs, correlation_table
from ncprompt.cli import main
from ncprompt.config import RunConfig
from ncprompt.protocols.experiment import Experiment


def test_analyze_and_report(tiny_backbone, fmnist_small, tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (1, 2, 3):
        for npt in (False, True):
            cfg = RunConfig.from_dict(dict(model="tiny-clip", method="coop", shots=2, protocol="base2new",
                                           cache_dir=str(tmp_path / "c"), method_options={"n_ctx": 4},
                                           train={"epochs": 2, "views": 1, "batch_size": 4, "seed": seed},
                                           npt={"enabled": npt, "lambda_lc": 1.0}))
            Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(runs / f"s{seed}-{npt}")
    one = runs / "s1-True"
    assert main(["analyze", str(one)]) == 0
    rep = json.loads((one / "analysis.json").read_text())
    assert set(rep["accuracy"]) == {"base", "new", "hm"}
    for p in ("training.png", "text_cosine_before_after.png", "geometry.png"):
        assert (one / "plots" / p).stat().st_size > 1000
    assert "nc3_self_duality" in (one / "analysis.md").read_text()
    # the heatmap and geometry show the new classes too (base-to-new): their text and test means were saved
    from safetensors.torch import load_file

    tf, im = load_file(str(one / "text_features.safetensors")), load_file(str(one / "image_means.safetensors"))
    assert tf["final_new"].shape[0] == im["test_means_new"].shape[0] == 5  # 10 classes: 5 base, 5 new

    out = tmp_path / "report"
    assert main(["report", str(runs), "--output", str(out)]) == 0
    rows = collect_runs([runs])
    assert len(rows) == 6
    table = {(e["metric"], e["accuracy"]): e for e in correlation_table(rows)}
    e = table[("train_nc3_self_duality", "acc_hm")]
    x = np.array([r["train_nc3_self_duality"] for r in rows])
    y = np.array([r["acc_hm"] for r in rows])
    if np.ptp(y) > 0:
        assert e["n"] == 6
        assert np.isclose(e["pearson"], pearsonr(x, y)[0]) and np.isclose(e["spearman"], spearmanr(x, y)[0])
    with open(out / "correlations.csv") as f:
        assert len(list(csv.DictReader(f))) == len(table)
    (fig,) = out.glob("correlations_tiny-clip_*_base2new_2_shots_hm.png")  # one family: model, data, protocol, shots
    assert fig.stat().st_size > 1000
    assert "Pearson" in (out / "correlations.md").read_text()
