"""Prompt templates: CLIP's ImageNet ensembles and resolving a template spec (the datasets' own
hand-written templates live in :mod:`ncprompt.data.templates`)."""

from __future__ import annotations

from typing import Any

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from ncprompt.data.templates import DEFAULT_TEMPLATE, PROMPTSRC_TEMPLATES
from ncprompt.methods.base import MethodConfigError


class PromptOverflowError(MethodConfigError):
    """A prompt is longer than the model's text context (the tokenizer would cut it silently); the
    message names the longest class name and what fits."""


def openai_imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet templates, as ``str.format`` patterns."""
    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def simple_imagenet_templates() -> list[str]:
    return [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]


def resolve_templates(spec: str | list[str] | None, dataset_templates: list[str] | None = None) -> list[str]:
    """``None``/"dataset" -> the dataset's own; "ensemble" -> CLIP's 80; "promptsrc" -> PromptSRC's 60 of them;
    "simple" -> open_clip's short ensemble; a string with ``{}`` -> that one template; a list -> as given."""
    if spec is None or spec == "dataset":
        return list(dataset_templates or [DEFAULT_TEMPLATE])
    if spec == "ensemble":
        return openai_imagenet_templates()
    if spec == "promptsrc":
        return list(PROMPTSRC_TEMPLATES)
    if spec == "simple":
        return simple_imagenet_templates()
    templates = [spec] if isinstance(spec, str) else list(spec)
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' where the class name goes")
    return templates


def prompt_classname(name: str) -> str:
    """A class name as it enters a prompt: underscores become spaces (as CoOp's loaders do), so
    ``"basset_hound"`` from an API user reads "basset hound"."""
    return name.replace("_", " ")


def token_count(tokenizer: Any, text: str, limit: int) -> int | None:
    """Tokens of ``text`` with its start and end tokens, before truncation (counted up to 2
    ``limit``); None when the tokenizer cannot tell (then nothing is checked)."""
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):  # open_clip's SimpleTokenizer (CLIP's BPE), as its __call__ counts
        return len(encode(text)) + 2
    try:  # other open_clip tokenizers: tokenise into a longer context, count up to the padding
        ids = tokenizer([text], context_length=2 * limit)[0]
        pad = tokenizer([""], context_length=2 * limit)[0][-1]
    except TypeError:
        return None
    used = (ids != pad).nonzero()
    return int(used.max()) + 1 if len(used) else 0


def longest_prompt(tokenizer: Any, texts: list[str], limit: int) -> tuple[int, int]:
    """(index, token count) of the longest of ``texts`` ((0, 0) when they cannot be counted)."""
    counts = [token_count(tokenizer, t, limit) or 0 for t in texts]
    if not counts:
        return 0, 0
    i = max(range(len(counts)), key=counts.__getitem__)
    return i, counts[i]


def check_templates_fit(tokenizer: Any, context_length: int, model: str, classnames: list[str],
                        templates: list[str]) -> None:
    """A :class:`PromptOverflowError` when a template filled with a class name is longer than the
    text context (the tokenizer would cut the class name off silently)."""
    texts = [t.format(prompt_classname(c)) for t in templates for c in classnames]
    i, n = longest_prompt(tokenizer, texts, context_length)
    if n > context_length:
        t, c = templates[i // len(classnames)], classnames[i % len(classnames)]
        raise PromptOverflowError(
            f"the prompt {texts[i]!r} (template {t!r}, longest class name {c!r}) needs {n} tokens but {model} reads "
            f"{context_length}: the class name would be cut off; shorten that template or class name")
