"""The typed config tree: every key reachable from the CLI, errors naming keys, presets, legacy files."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ncprompt.cli import SET_ONLY, build_parser, config_from_args, method_flags, run_flags
from ncprompt.config import (
    METHOD_CONFIGS,
    PRESETS,
    ConfigError,
    RunConfig,
    flatten,
    load_yaml,
    merge_layers,
    preset,
)


def _cfg(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_every_config_key_is_reachable_from_the_cli():
    flags = {(f.section, f.key) for f in run_flags() + method_flags()}
    keys = {tuple(k.split(".", 1)) for k in flatten(RunConfig().to_dict()) if not k.startswith("method.")}
    keys |= {("method", k) for cls in METHOD_CONFIGS.values() for k in cls.model_fields if k != "name"}
    missing = keys - flags - SET_ONLY
    assert not missing, f"config keys without a flag: {sorted(missing)}"
    # and every generated flag lands on its key
    parser = build_parser()
    for f in run_flags():
        if f.kind in ("true", "false"):
            a = parser.parse_args(["train", f.names[0]])
            assert vars(a)[f"cfg:{f.section}.{f.key}"] is (f.kind == "true")
    cfg = _cfg("--set", "data.options.test_fraction=0.5", "--set", "train.warmup_epochs=0")
    assert cfg.data.options == {"test_fraction": 0.5} and cfg.train.warmup_epochs == 0


def test_flags_set_typed_values_and_method_options():
    cfg = _cfg("--method", "kgcoop", "--kg-weight", "2", "--n-ctx", "4", "--lr", "1e-3", "--npt", "--no-cache",
               "--lambda-lc", "0.5", "--targets", "a", "b")
    assert cfg.method.name == "kgcoop" and cfg.method.kg_weight == 2.0 and cfg.method.n_ctx == 4
    assert cfg.train.lr == 0.001 and cfg.npt.enabled and not cfg.run.use_cache and cfg.npt.lambda_lc == 0.5
    assert cfg.data.targets == ["a", "b"]
    assert _cfg("--csc").method.class_specific  # the old flag name still works
    with pytest.raises(ConfigError, match="--n-ctx: method zeroshot has no option n_ctx"):
        _cfg("--method", "zeroshot", "--n-ctx", "4")


def test_layers_presets_and_method_switch():
    cfg = _cfg("--preset", "cocoop_b2n", "--epochs", "3")
    assert cfg.method.name == "cocoop" and cfg.train.batch_size == 1 and cfg.train.epochs == 3
    assert cfg.data.protocol == "base2new"
    # a later layer naming another method starts the method section over (no leaked options)
    cfg = _cfg("--preset", "cocoop_b2n", "--method", "zeroshot")
    assert cfg.method.name == "zeroshot"
    for name in PRESETS:
        RunConfig.from_dict(preset(name))


def test_wrong_types_name_their_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1e-3\n  epochs: 3\n")  # YAML reads 1e-3 as a string
    assert RunConfig.from_dict(load_yaml(f)).train.lr == 0.001
    for text, key in (("train:\n  epochs: 2.5\n", "train.epochs"), ("train: 5\n", "train:"),
                      ("method:\n  name: coop\n  n_ctx: many\n", "method.n_ctx"), ("modle: x\n", "modle"),
                      ("npt:\n  lc_form: etf\n", "npt.lc_form"), ("data:\n  shots: -1\n", "data.shots")):
        f.write_text(text)
        with pytest.raises(ConfigError, match=key) as e:
            RunConfig.from_dict(load_yaml(f), where=str(f))
        assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_conflicting_options_are_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match="method.class_specific"):
        RunConfig.from_dict({"method": {"name": "coop", "class_specific": True}, "data": {"protocol": "base2new"}})
    with pytest.raises(ConfigError, match="npt.enabled"):
        RunConfig.from_dict({"method": "zeroshot", "npt": {"enabled": True}})
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.from_dict({"data": {"targets": [f"folder={tmp_path / 'missing'}"]}})
    (tmp_path / "file").write_text("x")
    for key in ("output", "cache_dir"):
        with pytest.raises(ConfigError, match=f"run.{key}: .*existing file"):
            RunConfig.from_dict({"run": {key: str(tmp_path / "file")}})


def test_legacy_flat_configs_are_read_and_sectioned_ones_written():
    old = {"model": "tiny-clip", "dataset": "folder", "shots": 2, "method": "coop", "method_options": {"n_ctx": 4},
           "dataset_options": {"test_fraction": 0.5}, "output": "x"}
    cfg = RunConfig.from_dict(old)
    assert cfg.run.model == "tiny-clip" and cfg.data.options == {"test_fraction": 0.5} and cfg.method.n_ctx == 4
    assert RunConfig.from_dict(cfg.to_dict()) == cfg and set(cfg.to_dict()) == {"run", "data", "method", "train",
                                                                                   "npt"}
    assert merge_layers({"method": "coop", "method_options": {"n_ctx": 4}}, {"method": "zeroshot"}) == {
        "method": {"name": "zeroshot"}}


def test_fingerprint_ignores_where_a_run_is_written():
    a = RunConfig.from_dict({"run": {"output": "a", "cache_dir": "c"}})
    b = RunConfig.from_dict({"run": {"output": "b"}})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != RunConfig.from_dict({"train": {"lr": 0.01}}).fingerprint()


def test_wrong_type_is_named_before_anything_heavy_loads(tmp_path):
    """A subprocess: the CLI fails on the config, one line, without importing torch."""
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epochs: 2.5\n")
    code = ("import sys; from ncprompt.cli import main; rc = main(['train', '--config', sys.argv[1]]); "
            "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "train.epochs" in r.stderr and str(f) in r.stderr
