"""Display names of methods in tables and figures, and the order they are shown in.

A method label is a registered method name with an optional ``+npt`` (``coop+npt``); its display name is
the paper's spelling (``CoOp + NPT``; zero-shot CLIP is ``CLIP``). Methods appear in the grid's order
(first seen) with zero-shot first.
"""

from __future__ import annotations

from collections.abc import Iterable

#: registered method name -> the name papers use
DISPLAY_NAMES = {"zeroshot": "CLIP", "coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "maple": "MaPLe",
                 "ivlp": "IVLP", "promptsrc": "PromptSRC", "prograd": "ProGrad", "tcp": "TCP",
                 "linear_probe": "Linear probe"}
ZERO_SHOT = "zeroshot"


def display_name(label: str) -> str:
    """``coop+npt`` -> ``CoOp + NPT``, ``zeroshot`` -> ``CLIP``; an unknown name is kept as given."""
    name, plus, flag = str(label).partition("+")
    shown = DISPLAY_NAMES.get(name, name)
    if not plus:
        return shown
    return f"{shown} + NPT" if flag == "npt" else f"{shown}+{flag}"


def is_zero_shot(label: str) -> bool:
    return str(label).partition("+")[0] == ZERO_SHOT


def method_order(labels: Iterable[str]) -> list[str]:
    """Each label once, in first-seen order (the grid's method order), zero-shot labels first."""
    seen = list(dict.fromkeys(labels))
    return [m for m in seen if is_zero_shot(m)] + [m for m in seen if not is_zero_shot(m)]
