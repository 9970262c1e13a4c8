"""Small shared helpers: atomic file writes, progress bars, seeding, JSON(L) files.

Writes are atomic and durable: a file is written to a hidden ``.NAME.XXXX.tmp`` next to it, flushed
to disk (fsync) and renamed onto NAME, so a reader, a crash or a full disk never leaves a
half-written NAME (the previous version stays). Files get the user's umask (``mkstemp`` alone would
make them 0600). JSONL appends are one ``write()`` of a whole line, and a torn last line (a process
killed mid-append) is dropped on reading. Errors name the path and the fix (:class:`FileError`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("ncprompt")

#: suffix of the temporary files of :func:`atomic_write` (swept by :func:`sweep_tmp`)
TMP_SUFFIX = ".tmp"


class FileError(ValueError):
    """A file cannot be written or read back (disk full, read-only folder, corrupt content); the
    message names the path and the fix."""


def _file_error(path: Path, e: OSError) -> FileError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        why, fix = "the disk is full", "free some space or choose another --output / --cache-dir"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why, fix = "permission denied (read-only folder or file system)", "choose a writable --output / --cache-dir"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        why, fix = "a file stands where a folder is needed (or the reverse)", "choose another --output / --cache-dir"
    else:
        why, fix = e.strerror or str(e), "check the path"
    return FileError(f"cannot write {path}: {why}; {fix} (any previous version of the file is unchanged)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_path)``, fsync, then rename onto ``path``: a reader never sees a half-written
    file, and on any failure (disk full included) the previous ``path`` is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _file_error(path, e) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the user's umask
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise _file_error(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda p: p.write_bytes(data))


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str] | None = None) -> None:
    """Tensors to a .safetensors file, atomically; serialised in memory first, so a full disk is an
    OSError of the write (a :class:`FileError`), never a half-written file."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata))


def sweep_tmp(folder: str | Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove the ``.NAME.XXXX.tmp`` files that killed atomic writes left below ``folder``
    (only those older than ``older_than_s`` seconds, for folders other processes may write)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    now, removed = time.time(), []
    for p in root.rglob(f".*{TMP_SUFFIX}"):
        try:
            if p.is_file() and now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def first_nonfinite(obj: Any, where: str = "") -> str | None:
    """The dotted key of the first NaN/inf float in a JSON-like object, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "(top level)"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = first_nonfinite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def to_json(obj: Any, path: str | Path, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (no NaN/inf: they would make ``path`` invalid JSON and a result
    silently wrong); the error names the key."""
    try:
        return json.dumps(obj, indent=indent, default=_jsonable, allow_nan=False)
    except ValueError:
        key = first_nonfinite(json.loads(json.dumps(obj, default=_jsonable)))
        raise FileError(f"refusing to write a non-finite number (NaN/inf) into {path} at key {key!r}: "
                        "the computation behind it diverged; see the run's log") from None


def write_json(path: str | Path, obj: Any) -> None:
    text = to_json(obj, path, indent=2) + "\n"
    atomic_write(path, lambda p: p.write_text(text))


def write_jsonl(path: str | Path, records: list[Any]) -> None:
    """Write a whole JSONL file atomically (one strict-JSON record per line)."""
    text = "".join(to_json(r, path) + "\n" for r in records)
    atomic_write(path, lambda p: p.write_text(text))


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one record as one line with a single ``write()`` (then fsync): a crash leaves at most
    a torn last line, which :func:`read_jsonl` drops; a failed write is truncated away."""
    path = Path(path)
    line = (to_json(obj, path) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise _file_error(path, e) from None
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise _file_error(path, e) from None
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The records of a JSONL file ([] when it does not exist). A torn last line (a process killed
    mid-append) is dropped with a warning (to ``warn``, else the ``ncprompt`` logger, which the CLI shows);
    any other bad line is a :class:`FileError`."""
    p = Path(path)
    if not p.is_file():
        return []
    try:
        lines = p.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        lines = p.read_bytes().decode("utf-8", errors="replace").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
        elif i == len(lines) - 1:
            (warn or log.warning)(f"warning: {p}: dropped a torn last line (a run was killed while writing it)")
        else:
            raise FileError(f"{p}: line {i + 1} is not a JSON record; the file was edited or damaged: "
                            "fix or delete that line")
    return records


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


def cosine_decay(lr: float, t: float, total: float) -> float:
    """lr (1 + cos(pi min(1, t / total))) / 2: the cosine annealing every schedule of the project uses
    (CosineAnnealingLR's closed form with eta_min 0)."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(1.0, t / total)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


#: bars: tqdm bars (stderr is a terminal); lines: occasional progress lines instead where it is not (logs)
_PROGRESS = {"enabled": sys.stderr.isatty(), "lines": True}


def set_progress(enabled: bool) -> None:
    """Bars (on a terminal) and progress lines (elsewhere) on or off (``--no-progress``)."""
    _PROGRESS["enabled"] = enabled and sys.stderr.isatty()
    _PROGRESS["lines"] = enabled


def set_progress_lines(enabled: bool) -> bool:
    """Turn the non-terminal progress lines on or off (a grid's runs stay quiet); returns the previous state."""
    old = bool(_PROGRESS["lines"])
    _PROGRESS["lines"] = enabled
    return old


class LineProgress:
    """Progress for logs, where a bar cannot be drawn: a line on stderr once ``first_s`` seconds have passed,
    then every ``every_s`` seconds, and a last line at :meth:`close` when any was shown (a fast job says
    nothing). The part of tqdm's interface that :func:`progress` users call: ``update``, ``close``."""

    first_s = 10.0
    every_s = 30.0

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.shown = False

    def _line(self, now: float) -> None:
        rate = self.n / max(now - self.t0, 1e-9)
        of = f"/{self.total} ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{time.strftime('%H:%M:%S')} [{self.desc}] {self.n}{of} {self.unit}, {rate:.1f} {self.unit}/s",
              file=sys.stderr, flush=True)
        self.last, self.shown = now, True

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= (self.every_s if self.shown else self.first_s):
            self._line(now)

    def close(self) -> None:
        if self.shown:
            self._line(time.monotonic())
            self.shown = False


def progress_enabled() -> bool:
    """Whether tqdm bars are on (stderr is a terminal and ``--no-progress`` was not given)."""
    return bool(_PROGRESS["enabled"])


def progress(total: int | None = None, desc: str = "", unit: str = "it", **kw: Any) -> Any:
    """A tqdm bar on stderr when it is a terminal; elsewhere (logs) a :class:`LineProgress` of occasional lines;
    neither after ``set_progress(False)``."""
    from tqdm.auto import tqdm

    if not _PROGRESS["enabled"] and _PROGRESS["lines"]:
        return LineProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not _PROGRESS["enabled"], leave=False, **kw)
