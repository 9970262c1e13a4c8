"""Hand-written prompt templates of the datasets (plain strings: no torch, no open_clip).

Lives in the data layer so that dataset loaders and methods both read it without an upward import.
"""

from __future__ import annotations

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


def template_for(dataset: str) -> str:
    """CoOp's template of ``dataset``, or the default one."""
    return COOP_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)
