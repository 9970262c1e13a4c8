"""Frozen vision-language encoders read from open_clip."""

from ncprompt.backbones import pocket  # noqa: F401  (registers the project's own backbone)
from ncprompt.backbones.openclip import Backbone, BackboneError, list_backbones, load_backbone

__all__ = ["Backbone", "BackboneError", "list_backbones", "load_backbone"]
