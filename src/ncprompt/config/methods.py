"""One config model per prompt method, chosen by its ``name`` (a discriminated union over a registry).

A method's config is a :class:`MethodConfig` subclass whose ``name`` is a ``Literal`` with a
default; defining the class registers it (``METHOD_CONFIGS``), so a new method needs its config
model and its implementation file, nothing else. The built-in methods' models live here, light, so
``--help`` lists every option without importing torch.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ncprompt.config.base import ConfigError, ConfigModel, validate

#: method name -> config model (filled by subclassing :class:`MethodConfig`)
METHOD_CONFIGS: dict[str, type[MethodConfig]] = {}


class MethodConfig(ConfigModel):
    """Base of the per-method config models; ``name`` selects the method."""

    name: str = Field(description="prompt method (see `ncprompt methods`)")
    #: one-line description shown by `ncprompt methods` and --help
    summary: ClassVar[str] = ""
    #: the method's published training settings where they differ from ``TrainConfig``'s defaults (CoOp's); a run
    #: takes them for the ``train`` keys it does not set (``RunConfig``), so they show in its config.yaml
    train_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields["name"]
        args = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is Literal and len(args) == 1 and field.default == args[0]:
            key = str(args[0]).lower()
            old = METHOD_CONFIGS.get(key)
            if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ConfigError(f"method {key!r} has two config models: {old.__qualname__} and {cls.__qualname__}")
            METHOD_CONFIGS[key] = cls

    def conflicts(self, run: Any) -> list[str]:
        """Settings of the whole run (``run``: the :class:`RunConfig`) this method cannot work with,
        each as "key: problem and fix"; checked at load, before any model or data is touched."""
        return []

    def unused_keys(self, run: Any) -> tuple[str, ...]:
        """Config keys (a key ending in "." names all it starts) this method never reads under ``run`` (the
        :class:`RunConfig`): left out of the run's setting, so tables do not split runs by them."""
        return ()


def method_names() -> list[str]:
    return sorted(METHOD_CONFIGS)


def method_config_class(name: str) -> type[MethodConfig]:
    """The config model of method ``name`` (registered by defining it: built-in ones below, others where
    their method is defined, imported before use)."""
    key = str(name).lower()
    if key not in METHOD_CONFIGS:
        raise ConfigError(f"method: unknown method {name!r}; known methods: {', '.join(method_names())}")
    return METHOD_CONFIGS[key]


def method_config_defaults(value: Any) -> dict[str, Any]:
    """The ``train_defaults`` of the method named by ``value`` (a name, a mapping, a config; {} when unknown)."""
    if isinstance(value, MethodConfig):
        return dict(value.train_defaults)
    name = value.get("name", "coop") if isinstance(value, dict) else value
    cls = METHOD_CONFIGS.get(str(name).lower()) if isinstance(name, str) else None
    return dict(cls.train_defaults) if cls is not None else {}


def parse_method(value: Any, prefix: str = "method") -> MethodConfig:
    """A method config from a name (``"coop"``) or a mapping (``{name: coop, n_ctx: 4}``)."""
    if isinstance(value, MethodConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}: must be a method name or a mapping with a 'name' key, got {value!r}")
    if "name" not in value:  # options without a name: the default method's
        value = {"name": "coop", **value}
    return validate(method_config_class(value["name"]), value, prefix=prefix)


# --- built-in methods --------------------------------------------------------------------------

class ZeroShotConfig(MethodConfig):
    summary: ClassVar[str] = "zero-shot CLIP with hand-written templates (no training)"
    name: Literal["zeroshot"] = "zeroshot"
    templates: str | list[str] = Field(
        "dataset", description='"dataset" (its own), "ensemble" (CLIP\'s 80), "promptsrc" (PromptSRC\'s 60 of them), '
        '"simple", one "... {} ..." or a list')

    def conflicts(self, run: Any) -> list[str]:
        if run.npt.enabled:
            return ["npt.enabled: zeroshot trains nothing, so NPT has nothing to regularise; drop --npt "
                    "or choose a trainable method"]
        return []

    def unused_keys(self, run: Any) -> tuple[str, ...]:
        # no training: the shots only shape the head/middle/tail groups under class imbalance
        return ("train.", "npt.", *(("data.shots",) if run.data.imbalance is None else ()))


class CoOpConfig(MethodConfig):
    summary: ClassVar[str] = "CoOp: learned context vectors shared by all classes (or class-specific)"
    name: Literal["coop"] = "coop"
    n_ctx: int = Field(16, ge=1, description="number of context vectors (with ctx_init: see ctx_init_length)")
    ctx_init: str = Field("", description='words to initialise the context from, e.g. "a photo of a"; "" random')
    ctx_init_length: Literal["words", "n_ctx", "tokens"] = Field(
        "words", description="with ctx_init, how many context vectors are learned: 'words' (CoOp, CoCoOp, KgCoOp "
        "as published: one per word, the first tokens of ctx_init), 'n_ctx' (MaPLe as published: the first "
        "n_ctx tokens), 'tokens' (every BPE token of ctx_init); tokens of ctx_init past them stay frozen text")
    class_specific: bool = Field(False, description="one context per class (CSC; cannot transfer to new classes)")
    class_token_position: Literal["end", "middle", "front"] = Field("end", description="where the class name goes")
    init_seed: int = Field(0, ge=0, description="seed of the random context initialisation")

    def conflicts(self, run: Any) -> list[str]:
        if self.class_specific and (run.data.protocol == "base2new" or run.data.targets):
            return ["method.class_specific: class-specific context cannot be applied to new classes "
                    "(protocol base2new / targets); set it to false, or use protocol all without targets"]
        return []


class KgCoOpConfig(CoOpConfig):
    summary: ClassVar[str] = "KgCoOp: CoOp + consistency with the hand-written prompt's features"
    name: Literal["kgcoop"] = "kgcoop"  # type: ignore[assignment]
    n_ctx: int = Field(4, ge=1, description="number of context vectors (with ctx_init: see ctx_init_length)")
    ctx_init: str = Field("a photo of a", description="words to initialise the context from; \"\" random")
    kg_weight: float = Field(8.0, ge=0, description="weight w of the knowledge-guided consistency term")


class CoCoOpConfig(CoOpConfig):
    summary: ClassVar[str] = "CoCoOp: CoOp context shifted per image by a meta-net"
    name: Literal["cocoop"] = "cocoop"  # type: ignore[assignment]
    n_ctx: int = Field(4, ge=1, description="number of context vectors (with ctx_init: see ctx_init_length)")
    ctx_init: str = Field("a photo of a", description="words to initialise the context from; \"\" random")
    meta_reduction: int = Field(16, ge=1, description="meta-net hidden width = image width / meta_reduction")
    eval_chunk: int = Field(16, ge=1, description="images encoded together at evaluation (memory)")

    @model_validator(mode="after")
    def _shared_context(self) -> CoCoOpConfig:
        if self.class_specific:
            raise ValueError("class_specific: CoCoOp has no class-specific context (set it to false)")
        return self


class MaPLeConfig(CoOpConfig):
    summary: ClassVar[str] = "MaPLe: coupled deep prompts in the text and image towers (live image encoding)"
    name: Literal["maple"] = "maple"  # type: ignore[assignment]
    n_ctx: int = Field(2, ge=1, description="number of context vectors: the first n_ctx tokens of ctx_init")
    ctx_init: str = Field("a photo of a", description="the prompt's words; its first n_ctx tokens are learned, "
                          "the rest stay frozen text (as published); \"\" random")
    ctx_init_length: Literal["words", "n_ctx", "tokens"] = Field(
        "n_ctx", description="see CoOp; MaPLe as published learns the first n_ctx tokens of ctx_init")
    depth: int = Field(9, ge=1, description="prompted layers J (<= blocks of both towers; 9 for ViT-B-16)")

    @model_validator(mode="after")
    def _shared_end(self) -> MaPLeConfig:
        if self.class_specific or self.class_token_position != "end":
            raise ValueError("MaPLe uses one shared context with the class token at the end "
                             "(class_specific: false, class_token_position: end)")
        return self


# --- issue 11: further baselines (implementations in ncprompt/methods/<name>.py) -------------------

class LinearProbeConfig(MethodConfig):
    summary: ClassVar[str] = "linear probe (lpclip): logistic regression on image features, C chosen on validation"
    name: Literal["linear_probe"] = "linear_probe"
    c_grid: list[float] = Field([1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6], min_length=1,
                                description="initial values of C (inverse L2 strength), lpclip's")
    search_steps: int = Field(8, ge=0, description="bisection steps in log10 C after the grid (lpclip: 8)")
    max_iter: int = Field(1000, ge=1, description="L-BFGS iterations per fit")
    tol: float = Field(1e-4, gt=0, description="L-BFGS tolerance on max |gradient| of J/N (scikit-learn's default)")
    normalize: bool = Field(False, description="L2-normalise the image features first (lpclip: raw features)")
    cv_folds: int = Field(4, ge=2, description="folds of the cross-validation that scores C on the training images "
                          "(lpclip scores it on the dataset's val split, min(shots, 4) per class; docs/method.md)")
    val_shots: int = Field(0, ge=0, description="0: C by cross-validation (cv_folds); N > 0: the recipe before issue "
                           "19, one held-out part of min(N, n_k - 1) images per class (at 4 shots its fits see one "
                           "image per class)")

    @model_validator(mode="after")
    def _positive_grid(self) -> LinearProbeConfig:
        if any(not c > 0 for c in self.c_grid):
            raise ValueError(f"c_grid: every C must be > 0, got {self.c_grid}")
        return self

    def conflicts(self, run: Any) -> list[str]:
        problems = []
        if run.npt.enabled:
            problems.append("npt.enabled: a linear probe has no text features for NPT to regularise; drop --npt")
        if run.data.protocol == "base2new" or run.data.targets:
            problems.append("data.protocol: a linear probe has one weight row per training class and cannot score "
                            "new classes; use protocol all without targets")
        return problems

    def unused_keys(self, run: Any) -> tuple[str, ...]:
        # fitted in closed form on the centre view (no epochs, optimiser or augmented views); the shots count
        return ("train.", "npt.")


class IVLPConfig(MethodConfig):
    summary: ClassVar[str] = "IVLP: independent deep prompts in the text and image towers (no coupling)"
    name: Literal["ivlp"] = "ivlp"
    n_ctx_text: int = Field(4, ge=1, description="text prompt tokens per layer")
    n_ctx_vision: int = Field(4, ge=1, description="vision prompt tokens per layer")
    ctx_init: str = Field("a photo of a", description="words of the input text context (token count = n_ctx_text); "
                                                      "\"\" random")
    depth_text: int = Field(9, ge=0, description="prompted text layers (0: hand-written prompt, frozen)")
    depth_vision: int = Field(9, ge=0, description="prompted vision layers (0: frozen image tower, cached)")
    init_seed: int = Field(0, ge=0, description="seed of the prompt initialisation")


class PromptSRCConfig(IVLPConfig):
    summary: ClassVar[str] = "PromptSRC: IVLP regulated by the frozen model (L1, KL), Gaussian prompt aggregation"
    name: Literal["promptsrc"] = "promptsrc"  # type: ignore[assignment]
    text_loss_weight: float = Field(25.0, ge=0, description="weight of the L1 text-feature consistency")
    image_loss_weight: float = Field(10.0, ge=0, description="weight of the L1 image-feature consistency")
    logit_loss_weight: float = Field(1.0, ge=0, description="weight of the KL to the zero-shot logits")
    gpa: bool = Field(True, description="Gaussian-weighted aggregation of the prompts over epochs")
    gpa_mean: float = Field(15.0, description="GPA Gaussian mean (epoch, 1-based)")
    gpa_std: float = Field(1.0, gt=0, description="GPA Gaussian standard deviation (epochs)")
    templates: str | list[str] = Field("promptsrc", description='templates of the frozen text features: '
                                       '"promptsrc" (its 60 of CLIP\'s 80, as published), "ensemble" (CLIP\'s 80), '
                                       '"dataset" or a list')


class ProGradConfig(CoOpConfig):
    summary: ClassVar[str] = "ProGrad: CoOp whose CE gradient is projected off the zero-shot KL gradient on conflict"
    name: Literal["prograd"] = "prograd"  # type: ignore[assignment]
    prograd_lambda: float = Field(1.0, ge=0, description="lambda: share of the conflicting component removed")
    temperature: float = Field(1.0, gt=0, description="KL temperature T")
    template_init: bool = Field(True, description="initialise the last context vectors from the template's words "
                                                  "(zero-padded in front; first word-count tokens learned, the rest "
                                                  "frozen text), as published")
    templates: str | list[str] = Field(
        "prograd", description='teacher template and init: "prograd" (ProGrad\'s table, as published; the dataset\'s '
        'own for datasets it does not list), "dataset", or one "... {} ..."')


    @field_validator("templates")
    @classmethod
    def _one_template(cls, v: str | list[str]) -> str:
        if isinstance(v, list):  # the --templates flag is a list for the methods that average several
            if len(v) != 1:
                raise ValueError(f"ProGrad's teacher is one template, got {len(v)}; give one")
            v = v[0]
        if v not in ("prograd", "dataset") and "{}" not in v:
            raise ValueError(f"{v!r} is not 'prograd', 'dataset' or a template with '{{}}' where the class name goes")
        return v


class TCPConfig(CoOpConfig):
    summary: ClassVar[str] = "TCP: class-aware tokens from the frozen class text embeddings at a middle text layer"
    #: vit_b16_ep100_ctxv1.yaml: OPTIM.NAME "adam" (Dassl: torch.optim.Adam, L2 weight decay 5e-4)
    train_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adam"}
    name: Literal["tcp"] = "tcp"  # type: ignore[assignment]
    n_ctx: int = Field(4, ge=1, description="context tokens (and class-aware tokens)")
    kg_weight: float = Field(8.0, ge=0, description="weight of the KgCoOp-style consistency term")
    class_layer: int = Field(8, ge=0, description="text block before which the class-aware tokens replace the context")
    class_weight: float = Field(1.0, ge=0, le=1, description="mix w: w * class tokens + (1 - w) * hidden state")
    reduction: int = Field(4, ge=1, description="projection hidden width = embed_dim / reduction")
