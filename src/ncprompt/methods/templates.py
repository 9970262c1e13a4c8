"""Prompt templates: CLIP's ImageNet ensembles and resolving a template spec (the datasets' own
hand-written templates live in :mod:`ncprompt.data.templates`)."""

from __future__ import annotations

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from ncprompt.data.templates import DEFAULT_TEMPLATE


def openai_imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet templates, as ``str.format`` patterns."""
    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def simple_imagenet_templates() -> list[str]:
    return [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]


def resolve_templates(spec: str | list[str] | None, dataset_templates: list[str] | None = None) -> list[str]:
    """``None``/"dataset" -> the dataset's own; "ensemble" -> CLIP's 80; "simple" -> open_clip's
    short ensemble; a string with ``{}`` -> that one template; a list -> as given."""
    if spec is None or spec == "dataset":
        return list(dataset_templates or [DEFAULT_TEMPLATE])
    if spec == "ensemble":
        return openai_imagenet_templates()
    if spec == "simple":
        return simple_imagenet_templates()
    templates = [spec] if isinstance(spec, str) else list(spec)
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' where the class name goes")
    return templates
