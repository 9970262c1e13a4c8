"""Small shared helpers: atomic file writes, progress bars, seeding, JSON(L) files."""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_path)`` then rename onto ``path``: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n"))


def append_jsonl(path: str | Path, obj: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj, default=_jsonable) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


_PROGRESS = {"enabled": sys.stderr.isatty()}


def set_progress(enabled: bool) -> None:
    _PROGRESS["enabled"] = enabled


def progress(total: int | None = None, desc: str = "", unit: str = "it", **kw: Any) -> Any:
    """A tqdm bar on stderr (disabled when stderr is not a terminal, or by ``set_progress(False)``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not _PROGRESS["enabled"], leave=False, **kw)
