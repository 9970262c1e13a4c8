"""Which classes are base and which are new (base-to-new protocol), chosen by the user or CoOp's way.

Default (CoOp / CoCoOp): base = the first ceil(K/2) labels of the dataset's class order, new = the
rest. ``--base-classes`` takes class names (or label indices) in the order wanted, or a split file:
JSON ``{"base": [...], "new": [...]}`` (``new`` optional: all other classes) or plain text with
one base class name per line (``#`` comments allowed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ncprompt.data.base import DataError

BaseSpec = Sequence[str | int] | str | Path | None


def read_split_file(path: str | Path) -> tuple[list[str], list[str] | None]:
    """(base names, new names or None) from a JSON or text split file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"split file {p} does not exist; pass --base-classes NAME NAME ... or a file listing them")
    text = p.read_text()
    if p.suffix.lower() == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"split file {p} is not valid JSON ({e.msg}); write {{\"base\": [names], "
                            "\"new\": [names]}") from None
        if not isinstance(d, dict) or not isinstance(d.get("base"), list):
            raise DataError(f"split file {p} must hold {{\"base\": [class names], \"new\": [class names] (optional)}}")
        new = d.get("new")
        return [str(x) for x in d["base"]], None if new is None else [str(x) for x in new]
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [n for n in names if n], None


def _resolve(names: Sequence[str | int], classnames: Sequence[str], what: str) -> list[int]:
    lookup = {c: i for i, c in enumerate(classnames)}
    lookup.update({c.lower(): i for i, c in enumerate(classnames) if c.lower() not in lookup})
    out, bad = [], []
    for x in names:
        if isinstance(x, (int, np.integer)) or (isinstance(x, str) and x.isdigit() and x not in lookup):
            i = int(x)
            (out if 0 <= i < len(classnames) else bad).append(i)
        elif str(x) in lookup or str(x).lower() in lookup:
            out.append(lookup.get(str(x), lookup.get(str(x).lower())))
        else:
            bad.append(x)
    if bad:
        raise DataError(f"{what}: unknown class(es) {bad}; the dataset's classes are {list(classnames)}")
    if len(set(out)) != len(out):
        dup = sorted({classnames[i] for i in out if out.count(i) > 1})
        raise DataError(f"{what}: class(es) {dup} named twice")
    return out


def choose_base_classes(classnames: Sequence[str], base: BaseSpec = None) -> tuple[np.ndarray, np.ndarray]:
    """Label indices of the base and of the new classes (each in the order they are evaluated).

    ``base``: None (first ceil(K/2) labels), a list of class names / indices, or a split file path
    (a single string that names an existing file, or ends in .json/.txt)."""
    k = len(classnames)
    if base is None or (not isinstance(base, (str, Path)) and len(base) == 0):
        nb = math.ceil(k / 2)
        return np.arange(nb), np.arange(nb, k)
    new_names: list[str] | None = None
    if not isinstance(base, (str, Path)) and len(base) == 1 and isinstance(base[0], (str, Path)) \
            and str(base[0]) not in classnames and Path(str(base[0])).expanduser().is_file():
        base = base[0]  # `--base-classes FILE` arrives as a one-element list
    if isinstance(base, (str, Path)) and (Path(str(base)).expanduser().is_file()
                                          or str(base).endswith((".json", ".txt"))):
        base, new_names = read_split_file(base)
    elif isinstance(base, str):
        base = [base]
    b = _resolve(list(base), classnames, "--base-classes")
    if new_names is not None:
        n = _resolve(new_names, classnames, "split file 'new'")
        both = sorted({classnames[i] for i in set(b) & set(n)})
        if both:
            raise DataError(f"split file: class(es) {both} are both base and new")
    else:
        n = [i for i in range(k) if i not in set(b)]
    if not b or not n:
        raise DataError(f"base-to-new needs at least one base and one new class; got {len(b)} base, {len(n)} new "
                        f"of {k}: name fewer --base-classes")
    return np.asarray(b, dtype=np.int64), np.asarray(n, dtype=np.int64)
