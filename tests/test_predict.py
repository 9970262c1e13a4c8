"""``ncprompt.load_run`` and ``ncprompt predict``: a trained run labels new images as its evaluation did, and a
folder it cannot vouch for (no trained prompt, other weights, edited class names) is refused in one line."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ncprompt
from ncprompt.cli import main
from ncprompt.config import RunConfig
from ncprompt.engine.run_folder import RunFolderError
from ncprompt.methods.base import MethodConfigError
from ncprompt.protocols.experiment import Experiment, run_experiment
from ncprompt.protocols.predict import collect_images

DATASET = "emoji_hands_openmoji"


def pocket_run(root: Path, name: str, protocol: str = "base2new", **method) -> Path:
    cfg = RunConfig.from_dict({
        "run": {"model": "pocket", "cache_dir": str(root / "cache")},
        "data": {"dataset": DATASET, "protocol": protocol, "shots": 2, "max_test_per_class": 3},
        "method": {"name": "coop", "n_ctx": 4, **method}, "train": {"epochs": 2, "views": 1}})
    run_experiment(cfg, root / name)
    return root / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return pocket_run(tmp_path_factory.mktemp("predict"), "coop")


@pytest.fixture(scope="module")
def images(trained):
    """Six test images as PNG files: three at the top, three in a sub-folder; and a CSV naming two of them."""
    root = trained.parent / "unlabelled"
    (root / "sub").mkdir(parents=True, exist_ok=True)
    cfg = RunConfig.from_dict({"run": {"model": "pocket"}, "data": {"dataset": DATASET}})
    test = Experiment(cfg).dataset.test
    for i in range(6):
        test.load(i * 7).save(root / ("sub" if i >= 3 else "") / f"im{i}.png")
    (root / "list.csv").write_text("path,label\nim0.png,whatever\nsub/im4.png,x\n")
    return root


def test_predictions_are_the_evaluation(trained):
    """The loaded run, on the base test split, reaches exactly the top-1 its training run recorded (the same
    features and logits, replayed)."""
    run = ncprompt.load_run(trained)
    res = json.loads((trained / "results.json").read_text())
    assert run.classnames == res["info"]["classes"]["base"]
    exp = Experiment(RunConfig.from_dict(ncprompt.protocols.experiment.load_run(trained)[0].to_dict()))
    ev = exp.eval_sets()["base"]
    probs = run.probabilities(ev.images)
    assert probs.shape == (len(ev.images), len(run.classnames))
    assert np.allclose(probs.sum(-1).numpy(), 1.0, atol=1e-5)
    correct = int((probs.argmax(-1) == ev.labels).sum())
    assert correct == round(res["base"]["top1"] * len(ev.images) / 100)
    t = run.text_features()
    assert t.shape[0] == len(run.classnames) and np.allclose(t.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_predict_top_k_paths_and_pil(trained, images):
    run = ncprompt.load_run(trained)
    files = collect_images([images])
    assert [f.relative_to(images).as_posix() for f in files] == ["im0.png", "im1.png", "im2.png", "sub/im3.png",
                                                                  "sub/im4.png", "sub/im5.png"]
    preds = run.predict(images, top_k=3)
    assert [p.source for p in preds] == [str(f) for f in files]
    for p in preds:
        assert len(p.labels) == 3 and len(set(p.labels)) == 3 and set(p.labels) <= set(run.classnames)
        assert p.probs == sorted(p.probs, reverse=True) and 0 < sum(p.probs) <= 1 + 1e-6
    from PIL import Image

    pil = run.predict([Image.open(f) for f in files], top_k=3)
    assert [(p.labels, p.probs) for p in pil] == [(p.labels, p.probs) for p in preds]
    assert run.predict(images, top_k=100)[0].probs and len(run.predict(images, top_k=100)[0].labels) == 5
    with pytest.raises(ValueError, match="top_k"):
        run.predict(images, top_k=0)


def test_cli_predict_csv_json_and_classes(trained, images, capsys, tmp_path):
    assert main(["predict", str(trained), str(images / "list.csv"), str(images / "sub" / "im3.png"),
                 "--top-k", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out.out)))
    assert rows[0] == ["path", "label_1", "prob_1", "label_2", "prob_2"]
    assert [Path(r[0]).name for r in rows[1:]] == ["im0.png", "im4.png", "im3.png"]
    assert "predicting 3 image(s)" in out.err
    same = ncprompt.load_run(trained, device="cpu").predict([images / "im0.png"], top_k=2)[0]
    assert rows[1][1::2] == same.labels and [float(x) for x in rows[1][2::2]] == pytest.approx(same.probs, abs=1e-6)

    out_file = tmp_path / "p.json"
    assert main(["predict", str(trained), str(images), "--output", str(out_file), "--classes", "cat", "dog"]) == 0
    data = json.loads(out_file.read_text())
    assert len(data) == 6 and {d["label"] for d in data[0]["predictions"]} == {"cat", "dog"}


def test_refusals_are_one_line(trained, images, tmp_path, capsys):
    def refused(folder: Path, *extra: str) -> str:
        assert main(["predict", str(folder), str(images), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err

    assert "not a run folder" in refused(tmp_path)
    assert "does not exist" in refused(trained.parent / "nowhere")
    copy = tmp_path / "noprompt"
    shutil.copytree(trained, copy)
    (copy / "prompt.safetensors").unlink()
    assert "no trained prompt" in refused(copy)
    other = tmp_path / "weights"
    shutil.copytree(trained, other)
    inputs = json.loads((other / "inputs.json").read_text())
    (other / "inputs.json").write_text(json.dumps({**inputs, "weights": "file:pocket.safetensors:0 sha256:0"}))
    assert "other weights" in refused(other)
    edited = tmp_path / "edited"
    shutil.copytree(trained, edited)
    res = json.loads((edited / "results.json").read_text())
    res["info"]["classes"]["all"][0] = "renamed"
    (edited / "results.json").write_text(json.dumps(res))
    assert "do not match" in refused(edited)
    assert main(["predict", str(trained), str(tmp_path / "missing.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_classes_refused_for_a_class_specific_context(trained):
    csc = pocket_run(trained.parent, "csc", "all", class_specific=True)
    run = ncprompt.load_run(csc)
    with pytest.raises(MethodConfigError, match="--classes: class-specific"):
        run.for_classes(["cat", "dog"])
    assert ncprompt.load_run(trained).for_classes(["cat", "dog"]).classnames == ["cat", "dog"]
    with pytest.raises(MethodConfigError, match="distinct"):
        run.for_classes(["cat", "cat"])


def test_unfinished_run_is_refused(trained, tmp_path):
    copy = tmp_path / "unfinished"
    shutil.copytree(trained, copy)
    (copy / "results.json").unlink()
    with pytest.raises(RunFolderError, match="no finished run"):
        ncprompt.load_run(copy)


@pytest.mark.parametrize("edit", ["nan", "int", "damaged"])
def test_a_bad_prompt_file_is_refused_not_predicted_with(trained, tmp_path, edit):
    """The prompt is read and checked as `eval` reads it: a NaN prompt would label everything by chance, an int one
    would be cast, a damaged file would be a traceback."""
    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "edited"
    shutil.copytree(trained, copy)
    f = copy / "prompt.safetensors"
    state = load_file(str(f))
    if edit == "damaged":
        f.write_bytes(f.read_bytes()[:40])
    else:
        k = sorted(state)[0]
        state[k] = torch.full_like(state[k], float("nan")) if edit == "nan" else state[k].to(torch.int64)
        save_file(state, str(f))
    want = {"nan": "NaN/inf", "int": "torch.int64", "damaged": "is damaged"}[edit]
    with pytest.raises(RunFolderError, match=want):
        ncprompt.load_run(copy)


def test_zero_shot_run_predicts_and_takes_other_classes(trained, images, capsys):
    """A zero-shot run has no prompt file: it is rebuilt from its templates and takes any class names."""
    zs = trained.parent / "zs"
    assert main(["zeroshot", "--model", "pocket", "--dataset", DATASET, "--max-test-per-class", "2",
                 "--output", str(zs), "--cache-dir", str(trained.parent / "cache")]) == 0
    run = ncprompt.load_run(zs)
    assert len(run.classnames) == 10 and run.templates == ["{} emoji"]
    assert run.for_classes(["red apple", "green apple"]).predict(images / "im0.png", top_k=1)[0].label in (
        "red apple", "green apple")


def test_classes_file_and_output_formats(tmp_path):
    from ncprompt.protocols.predict import Prediction, format_predictions, read_classes

    f = tmp_path / "names.txt"
    f.write_text("red apple\n\n green apple \n")
    assert read_classes([str(f)]) == ["red apple", "green apple"]
    assert read_classes(["a", "b"]) == ["a", "b"]
    preds = [Prediction("x.png", ["a", "b"], [0.75, 0.25])]
    assert format_predictions(preds, "csv", 2) == "path,label_1,prob_1,label_2,prob_2\nx.png,a,0.750000,b,0.250000\n"
    assert json.loads(format_predictions(preds, "json", 2)) == [
        {"path": "x.png", "predictions": [{"label": "a", "prob": 0.75}, {"label": "b", "prob": 0.25}]}]
