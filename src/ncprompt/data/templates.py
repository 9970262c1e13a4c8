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


#: PromptSRC's ``IMAGENET_TEMPLATES`` (muzairkhattak/PromptSRC, trainers/imagenet_templates.py), in its order: 60 of
#: CLIP's 80 ImageNet templates, averaged into PromptSRC's frozen text target ("textual diversity").
PROMPTSRC_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.",
    "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.", "the toy {}.",
    "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
)

#: ProGrad's ``CUSTOM_TEMPLATES`` (BeierZhu/Prompt-align, ProGrad.public/trainers/prograd.py): its teacher prompt and
#: context initialisation. It differs from CoOp's for five datasets (the class name last, after the words that
#: initialise the context).
PROGRAD_TEMPLATES: dict[str, str] = {
    **COOP_TEMPLATES,
    "oxford_pets": "a type of pet, a photo of a {}.",
    "oxford_flowers": "a type of flower, a photo of a {}.",
    "fgvc_aircraft": "a type of aircraft, a photo of a {}.",
    "dtd": "a texture of {}.",
    "food101": "a type of food, a photo of {}.",
}


def template_for(dataset: str) -> str:
    """CoOp's template of ``dataset``, or the default one."""
    return COOP_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)
