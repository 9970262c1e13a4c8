"""scripts/results_doc.py merges pocket_results.sh's tau folders with pocket_methods.sh's method grids: every method in
the tau tables with its n, partial coverage shown, averages over what each method has, the linear probe apart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("tau1.0", "tau0.25", "tau0.06", "averages", "probe", "nc", "variants")


def _load():
    spec = importlib.util.spec_from_file_location("results_doc", ROOT / "scripts" / "results_doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(folder: Path, dataset: str, method: str, seed: int, npt: bool = False, base=None, new=None, all_=None,
         epochs: int = 5) -> None:
    folder.mkdir(parents=True)
    res = {"method": method, "npt": npt, "dataset": dataset, "model": "pocket", "seed": seed, "shots": 16,
           "imbalance": 1.0, "epochs_run": epochs, "protocol": "all" if all_ is not None else "base2new"}
    if all_ is not None:
        res["all"] = {"top1": all_}
    else:
        res.update(base={"top1": base}, new={"top1": new}, hm=2 * base * new / (base + new))
    (folder / "results.json").write_text(json.dumps(res))
    (folder / "config.yaml").write_text(yaml.safe_dump({"method": {"name": method}}))


def test_methods_merge_into_the_tau_table_with_their_n(tmp_path):
    out = tmp_path / "results"
    for ds in ("emoji_animals", "emoji_hands"):
        for seed in (1, 2):
            _run(out / "tau1.0" / ds / "coop" / f"seed{seed}", ds, "coop", seed, base=60.0 + seed, new=40.0)
    _run(out / "tau1.0-methods/maple/emoji_hands/maple+npt/seed1", "emoji_hands", "maple", 1, npt=True,
         base=50.0, new=30.0)
    _run(out / "tau1.0-methods/linear_probe/emoji_hands/linear_probe/seed1", "emoji_hands", "linear_probe", 1,
         all_=55.0)
    doc = tmp_path / "results.md"
    doc.write_text("intro\n" + "".join(f"<!-- results:{m}:begin -->\nold\n<!-- results:{m}:end -->\ntext\n"
                                       for m in MARKERS))
    assert _load().main([str(out), str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and "old" not in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    maple = [r for r in rows if "| MaPLe + NPT |" in r]  # the tables show paper names
    # the tau table: the maple row has n = 1 (one seed), the coop rows n = 2; maple's average covers 1 of 2 datasets
    assert any("| 1 | 50.00 | 30.00 | 37.50 |" in r for r in maple)
    assert any("Average (1/2 datasets) | MaPLe + NPT" in r for r in rows)
    assert any(r.startswith("| emoji_animals | CoOp |") and "| 2 | 61.50 ± 0.71 | 40.00 ± 0.00 |" in r for r in rows)
    # averages: per-dataset means averaged over the datasets a method has, with its coverage
    assert "| 1.0 | coop | 2/2 | 2 | 61.50 | 40.00 | 48.47 |" in text
    assert "| 1.0 | maple+npt | 1/2 | 1 | 50.00 | 30.00 | 37.50 |" in text
    # the linear probe (protocol all) is no base-to-new row but has its own table
    assert not any("linear_probe" in r and "Average" in r for r in rows)
    assert "| 1.0 | emoji_hands | linear_probe | 1 | 55.00 |" in text
    assert "(not run: no runs under" in text  # tau 0.06 has none
