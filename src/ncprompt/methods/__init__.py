"""Prompt methods, registered by name: ``build_method("coop", backbone, classnames, options)``."""

from ncprompt.methods import cocoop, coop, kgcoop, maple, zeroshot  # noqa: F401  (registration)
from ncprompt.methods.base import METHODS, MethodConfig, MethodOutput, PromptMethod, build_method

__all__ = ["METHODS", "MethodConfig", "MethodOutput", "PromptMethod", "build_method"]
