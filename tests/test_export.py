"""``ncprompt export``: the exported head gives ``ncprompt predict``'s predictions in plain open_clip (the docs'
snippet, executed), the folder is itself loadable, and image-side-prompt methods say what plain open_clip
cannot run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

import ncprompt
from ncprompt.cli import main
from ncprompt.config import RunConfig
from ncprompt.protocols.experiment import Experiment, run_experiment
from ncprompt.protocols.export import USAGE_SNIPPET

USAGE = Path(__file__).resolve().parent.parent / "docs" / "usage.md"
DATASET = "emoji_hands_openmoji"


def pocket_run(root: Path, name: str, method: dict) -> Path:
    cfg = RunConfig.from_dict({
        "run": {"model": "pocket", "cache_dir": str(root / "cache")},
        "data": {"dataset": DATASET, "protocol": "base2new", "shots": 1, "max_test_per_class": 2},
        "method": method, "train": {"epochs": 1, "views": 1}})
    run_experiment(cfg, root / name)
    return root / name


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    run = pocket_run(root, "coop", {"name": "coop", "n_ctx": 4})
    assert main(["export", str(run), "--output", str(root / "export")]) == 0
    return run, root / "export"


def docs_snippet() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", USAGE.read_text(), flags=re.S | re.M)
    found = [b for b in blocks if "export/head.safetensors" in b]
    assert len(found) == 1, "docs/usage.md holds one export snippet"
    return found[0]


def test_docs_snippet_is_short_and_the_model_cards(exported):
    code = docs_snippet()
    assert len(code.strip().splitlines()) <= 10
    assert code == USAGE_SNIPPET  # the model card shows the same lines
    assert USAGE_SNIPPET in (exported[1] / "README.md").read_text()


def test_plain_open_clip_gives_the_same_predictions(exported, tmp_path, monkeypatch):
    run_dir, export = exported
    cfg = RunConfig.from_dict({"run": {"model": "pocket"}, "data": {"dataset": DATASET}})
    image = Experiment(cfg).dataset.test.load(3)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export").symlink_to(export)
    image.save("photo.png")
    scope: dict = {}
    exec(compile(docs_snippet(), "docs/usage.md export snippet", "exec"), scope)
    pred = ncprompt.load_run(run_dir, device="cpu").predict(["photo.png"], top_k=1)[0]  # the snippet runs on CPU
    assert scope["meta"]["classnames"][int(scope["probs"].argmax())] == pred.label
    # the same fp32 model and formula, encoded by open_clip directly vs through ncprompt's batches: close, not equal
    assert float(scope["probs"].max()) == pytest.approx(pred.probs[0], abs=1e-4)
    again = ncprompt.load_run(export, device="cpu").predict(["photo.png"], top_k=1)[0]  # a run folder too
    assert (again.label, again.probs) == (pred.label, pred.probs)


def test_export_files(exported):
    run_dir, export = exported
    assert {p.name for p in export.iterdir()} == {"head.safetensors", "ncprompt_head.json", "README.md",
                                                  "config.yaml", "inputs.json", "results.json", "prompt.safetensors"}
    meta = json.loads((export / "ncprompt_head.json").read_text())
    run = ncprompt.load_run(run_dir)
    assert meta["plain_open_clip"] is True and meta["classnames"] == run.classnames
    assert meta["method"]["name"] == "coop" and meta["method"]["n_ctx"] == 4 and meta["seed"] == 1
    assert meta["weights"] == json.loads((run_dir / "inputs.json").read_text())["weights"]
    assert meta["preprocess"]["size"] and meta["open_clip"]["model_name"].startswith("local-dir:")
    with safe_open(str(export / "head.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["classnames"]) == run.classnames
        w = f.get_tensor("weight")
    assert w.shape == run.text_features().shape and float((w - run.text_features()).abs().max()) < 1e-6
    card = (export / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "open_clip" and "coop" in front["tags"]
    metrics = [r["metrics"][0]["value"] for r in front["model-index"][0]["results"]]
    res = json.loads((run_dir / "results.json").read_text())
    assert metrics == [round(res["base"]["top1"], 2), round(res["new"]["top1"], 2)]
    assert "seed 1" in card


def test_image_side_prompts_export_says_load_run(exported, tmp_path, capsys):
    run_dir = pocket_run(exported[0].parent, "maple", {"name": "maple", "n_ctx": 2, "depth": 1})
    capsys.readouterr()
    assert main(["export", str(run_dir), "--output", str(tmp_path / "exp")]) == 0
    assert "no plain-open_clip head" in capsys.readouterr().out
    meta = json.loads((tmp_path / "exp" / "ncprompt_head.json").read_text())
    assert meta["plain_open_clip"] is False and "load_run" in meta["plain_open_clip_note"]
    assert not (tmp_path / "exp" / "head.safetensors").exists()
    assert "cannot run it" in (tmp_path / "exp" / "README.md").read_text()
    cfg = RunConfig.from_dict({"run": {"model": "pocket"}, "data": {"dataset": DATASET}})
    Experiment(cfg).dataset.test.load(0).save(tmp_path / "m.png")
    direct, via_export = (ncprompt.load_run(d).predict([tmp_path / "m.png"], top_k=2)[0]
                          for d in (run_dir, tmp_path / "exp"))
    assert (via_export.labels, via_export.probs) == (direct.labels, direct.probs)


def test_model_card_reads_as_a_hugging_face_card(exported):
    """huggingface_hub parses the card (offline): the eval results of the front matter are the run's."""
    hub = pytest.importorskip("huggingface_hub")
    card = hub.ModelCard.load(exported[1] / "README.md")
    res = json.loads((exported[0] / "results.json").read_text())
    got = {r.dataset_name: r.metric_value for r in card.data.eval_results}
    assert got == {f"{DATASET} (base classes)": round(res["base"]["top1"], 2),
                   f"{DATASET} (new classes)": round(res["new"]["top1"], 2)}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"} and card.data.library_name == "open_clip"


def test_export_refuses_a_used_folder(exported, tmp_path, capsys):
    (tmp_path / "other.txt").write_text("x")
    assert main(["export", str(exported[0]), "--output", str(tmp_path)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert main(["export", str(exported[0]), "--output", str(exported[0])]) == 2


@pytest.mark.parametrize("method", [{"name": "linear_probe", "normalize": True}, {"name": "kgcoop", "n_ctx": 4}])
def test_head_formula_is_the_methods_prediction(exported, tmp_path, method):
    """logit_scale * normalise(f) @ weight.T + bias on the frozen image features gives the method's probabilities
    (a linear probe: W, b and scale 1; a prompt method: its normalised text features)."""
    import torch

    protocol = "all" if method["name"] == "linear_probe" else "base2new"
    cfg = RunConfig.from_dict({
        "run": {"model": "pocket", "cache_dir": str(exported[0].parent / "cache")},
        "data": {"dataset": DATASET, "protocol": protocol, "shots": 2, "max_test_per_class": 2},
        "method": method, "train": {"epochs": 1, "views": 1}})
    run_experiment(cfg, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "exp")]) == 0
    from safetensors.torch import load_file

    head = load_file(str(tmp_path / "exp" / "head.safetensors"))
    run = ncprompt.load_run(tmp_path / "run")
    images = Experiment(cfg).eval_sets()["all" if protocol == "all" else "base"].images
    f = torch.nn.functional.normalize(run.method.image_features(images), dim=-1)
    probs = (head["logit_scale"] * f @ head["weight"].T + head["bias"]).softmax(-1)
    # the same fp32 features; the method computes its logits in another order of operations: close, not equal
    torch.testing.assert_close(probs, run.probabilities(images), atol=1e-5, rtol=0)
