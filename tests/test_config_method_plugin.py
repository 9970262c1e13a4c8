"""A new method is one config model plus one class: registered here, in this file only, it gets CLI flags,
config validation and the whole run path (training, evaluation, results) without an edit anywhere else."""

from __future__ import annotations

from typing import ClassVar, Literal

import pytest
import torch
from pydantic import Field
from torch import nn

from ncprompt.cli import build_parser, config_from_args
from ncprompt.config import ConfigError, MethodConfig, RunConfig
from ncprompt.methods.base import METHODS, MethodContext, PromptMethod, register_method


class ToyBiasConfig(MethodConfig):
    summary: ClassVar[str] = "toy: zero-shot text features plus a learned shared offset"
    name: Literal["toy_bias"] = "toy_bias"
    scale: float = Field(1.0, gt=0, description="size of the initial offset")


@register_method
class ToyBias(PromptMethod):
    """t_k = t_k^zs + b, with b learned (shared by all classes)."""

    config_class = ToyBiasConfig

    def __init__(self, context: MethodContext, cfg: ToyBiasConfig | None = None, bias: nn.Parameter | None = None):
        super().__init__(context, cfg)
        from ncprompt.methods.zeroshot import zero_shot_classifier

        self.register_buffer("zs", zero_shot_classifier(self.backbone, self.classnames, self.templates[:1]))
        self.bias = bias if bias is not None else nn.Parameter(torch.zeros(self.zs.shape[1]) + 0.01 * self.cfg.scale)

    def text_features(self) -> torch.Tensor:
        return self.zs + self.bias

    def for_classnames(self, classnames: list[str]) -> ToyBias:
        return ToyBias(self.context.with_classnames(classnames), self.cfg, bias=self.bias)


def test_toy_method_gets_flags_validation_and_a_full_run(tiny_backbone, fmnist_small, tmp_path):
    from ncprompt.protocols.experiment import Experiment

    assert "toy_bias" in METHODS
    a = build_parser().parse_args(["train", "--method", "toy_bias", "--scale", "2", "--protocol", "base2new"])
    cfg = config_from_args(a)
    assert isinstance(cfg.method, ToyBiasConfig) and cfg.method.scale == 2.0
    with pytest.raises(ConfigError, match="method.scale"):
        RunConfig.from_dict({"method": {"name": "toy_bias", "scale": -1}})
    cfg = RunConfig.from_dict({**cfg.to_dict(), "run": {"model": "tiny-clip", "cache_dir": str(tmp_path / "c")},
                               "data": {"protocol": "base2new", "shots": 2},
                               "train": {"epochs": 2, "views": 1, "batch_size": 8}})
    res = Experiment(cfg, tiny_backbone, fmnist_small).run(tmp_path / "run")
    assert res.method == "toy_bias" and res.epochs_run == 2 and res.hm is not None
    assert res.splits["new"].classnames == fmnist_small.classnames[5:]
    assert "name: toy_bias" in (tmp_path / "run" / "config.yaml").read_text()
