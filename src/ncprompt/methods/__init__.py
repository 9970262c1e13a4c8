"""Prompt methods, registered by name: ``build_method("coop", backbone, classnames, options)``."""

from ncprompt.methods import (  # noqa: F401  (registration)
    cocoop,
    coop,
    ivlp,
    kgcoop,
    linear_probe,
    maple,
    prograd,
    promptsrc,
    tcp,
    zeroshot,
)
from ncprompt.methods.base import (
    METHODS,
    MethodContext,
    MethodOutput,
    PromptMethod,
    build_method,
    register_method,
)

__all__ = ["METHODS", "MethodContext", "MethodOutput", "PromptMethod", "build_method", "register_method"]
