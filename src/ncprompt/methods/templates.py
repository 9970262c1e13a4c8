"""Prompt templates: the single CoOp template per dataset and CLIP's ImageNet ensemble."""

from __future__ import annotations

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

DEFAULT_TEMPLATE = "a photo of a {}."

#: CoOp's hand-written template per dataset (as in its ``CUSTOM_TEMPLATES``).
COOP_TEMPLATES: dict[str, str] = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
}


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
