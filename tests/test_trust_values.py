"""Issue 19 section 5, values not checked where used: booleans for numbers and duplicate YAML keys, pocket
weights of another context length, grid worker and rank counts, what `protocol --print-config` shows,
and where `tables` reports a corrupt file. Each is refused in one line naming the key, file or flag (or,
for --print-config, shows the whole grid)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ncprompt.cli import main
from ncprompt.config import ConfigError, RunConfig, load_yaml
from ncprompt.config.base import parse_assignment


def _err_line(capsys) -> str:
    out = capsys.readouterr()
    assert out.err.count("\n") == 1, out.err
    return out.err


# --- YAML and config values ------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value", [
    ("data", "shots", True), ("train", "epochs", True), ("train", "lr", False), ("npt", "lambda_lc", True),
    ("method", "n_ctx", True), ("data", "max_test_per_class", True),
])
def test_boolean_for_a_number_is_refused_naming_the_key(section, key, value):
    d = {section: {key: value}}
    if section == "method":
        d[section]["name"] = "coop"
    with pytest.raises(ConfigError, match=rf"{section}.{key}: {value} is a boolean where a number is needed"):
        RunConfig.from_dict(d)


def test_boolean_in_a_list_of_numbers_is_refused():
    with pytest.raises(ConfigError, match=r"method.c_grid: \[1.0, True\] holds a boolean"):
        RunConfig.from_dict({"method": {"name": "linear_probe", "c_grid": [1.0, True]}})


def test_numbers_spelt_as_yaml_strings_still_read():
    cfg = RunConfig.from_dict({"train": {"lr": "1e-3", "epochs": "5"}, "data": {"shots": 4}})
    assert (cfg.train.lr, cfg.train.epochs, cfg.data.shots) == (1e-3, 5, 4)


def test_yaml_shots_true_from_the_cli_is_one_line(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  shots: true\n")
    assert main(["train", "--config", str(f), "--print-config"]) == 2
    assert "data.shots: True is a boolean where a number is needed" in _err_line(capsys)
    assert main(["train", "--set", "train.epochs=yes", "--print-config"]) == 2
    assert "train.epochs: True is a boolean" in _err_line(capsys)


def test_duplicate_yaml_keys_are_refused_naming_key_and_lines(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  shots: 4\ntrain:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'epochs' is given twice \(lines 4 and 6\); keep one"):
        load_yaml(f)
    f.write_text("data: {shots: 4}\ntrain: {epochs: 3}\ndata: {shots: 8}\n")
    assert main(["train", "--config", str(f), "--print-config"]) == 2
    assert "key 'data' is given twice (lines 1 and 3)" in _err_line(capsys)
    with pytest.raises(ConfigError, match=r"--set .*key 'a' is given twice"):
        parse_assignment("data.options={a: 1, a: 2}")


def test_yaml_merge_keys_still_override():
    f_text = "base: &b {epochs: 3, lr: 0.1}\ntrain:\n  <<: *b\n  epochs: 5\n"
    from ncprompt.config.base import read_yaml

    assert read_yaml(f_text)["train"] == {"epochs": 5, "lr": 0.1}


# --- pocket weights of another context length or image size -------------------------------------------

@pytest.mark.parametrize("key, length", [("positional_embedding", 77), ("visual.positional_embedding", 65)])
def test_pocket_weights_with_other_position_count_are_refused(tmp_path, key, length):
    from safetensors.torch import load_file, save_file

    from ncprompt.backbones import load_backbone
    from ncprompt.backbones.openclip import BackboneError
    from ncprompt.backbones.pocket import pocket_backbone

    shipped = pocket_backbone()
    if shipped is None:
        pytest.skip("the pocket weights are not shipped in this checkout")
    sd = load_file(str(shipped))
    pe = sd[key]  # text: 32 positions; image: 4x4 patches + class token
    sd[key] = torch.cat([pe, pe[-1:].expand(length - pe.shape[0], -1)]).contiguous()
    f = tmp_path / "other.safetensors"
    save_file(sd, str(f))
    with pytest.raises(BackboneError, match=rf"does not match architecture 'pocket': .*{key}: file "
                                            rf"\[{length}, {pe.shape[1]}\] vs model \[{pe.shape[0]}, {pe.shape[1]}\]"):
        load_backbone("pocket", str(f), device="cpu")  # open_clip resized it silently before


# --- grid workers, torchrun ranks --------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["0", "-2"])
@pytest.mark.parametrize("command", [["protocol", "--datasets", "x", "--methods", "coop", "--output", "o"], ["demo"]])
def test_workers_below_one_are_refused(command, workers, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--workers", workers])
    assert e.value.code == 2
    assert f"--workers: a number of processes >= 1 is needed, got '{workers}'" in _err_line(capsys)


def test_nproc_beyond_cores_and_gpus_is_refused():
    from ncprompt.cli import nproc_problem

    assert nproc_problem(2, cpus=2, gpus=0) is None
    assert nproc_problem(4, cpus=2, gpus=4) is None  # one rank per GPU
    # one GPU: two ranks would share it (NCCL refuses); CPU ranks are still allowed when asked for
    assert "--nproc 2 on CUDA needs a GPU per process and 1 is/are visible" in nproc_problem(2, cpus=16, gpus=1)
    assert "--device cpu" in nproc_problem(2, cpus=16, gpus=1, device="cuda")
    assert nproc_problem(2, cpus=16, gpus=1, device="cpu") is None
    msg = nproc_problem(99, cpus=2, gpus=0)
    assert msg == ("--nproc 99: this process may use 2 CPU core(s) and sees 0 CUDA GPU(s); run at most one process "
                   "per core or GPU: --nproc 2 or fewer")


def test_nproc_99_is_refused_before_torchrun_starts(capsys, monkeypatch):
    import ncprompt.engine.distributed as distributed

    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("torchrun was started"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--nproc", "9999", "--epochs", "1"]) == 2
    assert "--nproc 9999: this process may use" in _err_line(capsys)


# --- protocol --print-config ---------------------------------------------------------------------------

def test_protocol_print_config_shows_the_grid_and_the_whole_cell_config(capsys):
    code = main(["protocol", "--datasets", "emoji_animals", "emoji_food", "--methods", "zeroshot", "coop",
                 "coop+npt", "--seeds", "1", "2", "--shots", "4", "8", "--output", "g", "--epochs", "3",
                 "--set", "per_method.coop.n_ctx=4", "--print-config"])
    assert code == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["grid"] == {"datasets": ["emoji_animals", "emoji_food"], "shots": [4, 8],
                           "methods": ["zeroshot", "coop", "coop+npt"], "seeds": [1, 2], "output": "g", "workers": 1}
    assert out["train"]["epochs"] == 3 and out["data"]["protocol"] == "base2new"
    assert set(out["train"]) >= {"lr", "batch_size", "views", "warmup_epochs"}  # defaults filled, not just overrides
    assert "seed" not in out["train"] and "dataset" not in out["data"]  # set by each cell from the grid lists
    assert out["methods"]["coop"]["n_ctx"] == 4 and out["methods"]["coop+npt"]["npt"] is True
    assert out["methods"]["zeroshot"]["name"] == "zeroshot"


# --- tables -------------------------------------------------------------------------------------------

def test_tables_names_a_corrupt_results_file_on_stderr(tmp_path, capsys):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "results.json").write_text('{"splits": ')
    assert main(["tables", str(tmp_path / "runs"), "--output", str(tmp_path / "t")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1
    assert f"{run / 'results.json'} cannot be read (JSONDecodeError" in out.err
    (run / "results.json").write_text(json.dumps([1, 2]))
    assert main(["tables", str(tmp_path / "runs"), "--output", str(tmp_path / "t")]) == 2
    assert "results.json holds a list, not a mapping" in _err_line(capsys)


def test_tables_with_no_results_reports_on_stderr(tmp_path, capsys):
    assert main(["tables", str(tmp_path), "--output", str(tmp_path / "t")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "no results.json under" in out.err
