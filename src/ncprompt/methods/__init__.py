"""Prompt methods, registered by name: ``build_method("coop", backbone, classnames, options)``."""

from ncprompt.methods import cocoop, coop, kgcoop, maple, zeroshot  # noqa: F401  (registration)
from ncprompt.methods.base import (
    METHODS,
    MethodContext,
    MethodOutput,
    PromptMethod,
    build_method,
    register_method,
)

__all__ = ["METHODS", "MethodContext", "MethodOutput", "PromptMethod", "build_method", "register_method"]
