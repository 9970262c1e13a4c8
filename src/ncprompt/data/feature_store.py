"""Feature arrays stored as row shards with a manifest: memory-mapped on read, written shard by shard.

A store of N rows of shape ``row_shape`` (e.g. ``(views, E)``) is a folder::

    manifest.json         {"format", "describe", "n", "row_shape", "dtype", "shard_rows", "shards", "complete"}
    shard-00000.npy       rows [0, shard_rows)
    shard-00001.npy       rows [shard_rows, 2·shard_rows) ...

Each shard is written to a temporary file and renamed into place, then the manifest (rewritten the same
way) records its rows and the SHA-256 of its bytes. A build killed at any moment therefore leaves only
complete shards that the manifest vouches for; a rebuild keeps them and computes the rest. On read every
shard's checksum is verified; a shard that is missing, unreadable or does not match is recomputed.
Opened shards are ``np.load(mmap_mode="r")`` memory maps: rows are paged in when gathered, so the whole
``N × row_shape`` array never has to sit in RAM.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncprompt.utils import FileError, atomic_write

FORMAT = "ncprompt-features/2"
MANIFEST = "manifest.json"
#: the only file names a manifest may list (never a path out of its folder)
SHARD_NAME = re.compile(r"shard-\d{5,}\.npy")
STALE_TMP_S = 600.0


class CacheWarning(UserWarning):
    """The feature cache could not be used as asked (damaged entry, unwritable folder); work goes on without it."""


def warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=3)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def shard_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the shards of n rows."""
    return [(a, min(a + shard_rows, n)) for a in range(0, n, shard_rows)] or [(0, 0)]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


class FeatureStore:
    """Rows ``[0, N)`` held as consecutive shards, each a numpy array (a read-only memory map or in RAM)."""

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        if not shards:
            raise ValueError("a feature store needs at least one shard")
        self.shards = list(shards)
        sizes = [len(s) for s in self.shards]
        self.stops = np.cumsum(sizes)
        self.starts = self.stops - np.asarray(sizes)
        self.shape = (int(self.stops[-1]), *self.shards[0].shape[1:])
        self.dtype = self.shards[0].dtype

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> FeatureStore:
        return cls([t.detach().cpu().numpy()])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def memory_mapped(self) -> bool:
        return all(isinstance(s, np.memmap) for s in self.shards)

    def gather(self, rows: torch.Tensor | np.ndarray, cols: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """``X[rows]``, or ``X[rows, cols]`` row by row (e.g. one view per image), as a new tensor."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        c = None if cols is None else np.asarray(cols, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1 + (c is not None):]), dtype=self.dtype)
        which = np.searchsorted(self.stops, rows, side="right")
        for s in np.unique(which):
            sel = which == s
            local = rows[sel] - self.starts[s]
            out[sel] = self.shards[s][local] if c is None else self.shards[s][local, c[sel]]
        return torch.from_numpy(out)

    def to_tensor(self) -> torch.Tensor:
        """The whole array in RAM."""
        return torch.from_numpy(np.concatenate([np.asarray(s) for s in self.shards]))


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _manifest_problem(m: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a manifest (an edited or foreign file), or None."""
    if not _is_int(m.get("shard_rows"), 1):
        return "'shard_rows' is not a positive integer"
    shape = m.get("row_shape")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        return "'row_shape' is not a list of sizes"
    shards = m.get("shards")
    if not isinstance(shards, dict):
        return "'shards' is not a mapping"
    for k, info in shards.items():
        if not (isinstance(k, str) and k.isdigit() and isinstance(info, dict)):
            return f"shard entry {k!r} is not a numbered mapping"
        missing = [f for f in ("file", "start", "stop", "sha256") if f not in info]
        if missing:
            return f"shard {k} lacks {', '.join(missing)}"
        if not (isinstance(info["file"], str) and SHARD_NAME.fullmatch(info["file"])):
            return f"shard {k}: file {info['file']!r} is not a shard name of this folder"
        if not (_is_int(info["start"]) and _is_int(info["stop"]) and isinstance(info["sha256"], str)):
            return f"shard {k}: start, stop or sha256 has the wrong type"
    return None


class ShardedFile:
    """The shard folder of one store: reads and verifies its manifest, writes shards and the manifest."""

    def __init__(self, folder: Path, describe: dict[str, Any], n: int, shard_rows: int, dtype: str = "float32") -> None:
        self.folder, self.describe, self.n, self.dtype = folder, describe, n, dtype
        self.shard_rows = shard_rows
        self.row_shape: list[int] | None = None
        self.shards: dict[int, dict[str, Any]] = {}

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def _read_manifest(self) -> dict[str, Any] | None:
        p = self.manifest_path
        if not p.is_file():
            return None
        try:
            m = json.loads(p.read_text())
            if not isinstance(m, dict):
                raise ValueError("not a JSON object")
            ok = (m.get("format") == FORMAT and m.get("describe") == self.describe and m.get("n") == self.n
                  and m.get("dtype") == self.dtype)
            bad = _manifest_problem(m) if ok else None
        except (OSError, ValueError) as e:
            warn(f"feature cache manifest {p} is unreadable ({e}); recomputing its features")
            return None
        if not ok:
            warn(f"feature cache manifest {p} does not match the features asked for; recomputing them")
            return None
        if bad:
            warn(f"feature cache manifest {p} is damaged ({bad}); recomputing its features")
            return None
        return m

    def valid_shards(self) -> dict[int, np.memmap]:
        """The shards on disk that the manifest lists and whose bytes match its checksums, memory-mapped.

        Adopts the manifest's shard size and row shape (so a resumed build keeps the same shards)."""
        m = self._read_manifest()
        if m is None:
            return {}
        self.shard_rows, self.row_shape = int(m["shard_rows"]), m.get("row_shape")
        ranges = shard_ranges(self.n, self.shard_rows)
        out: dict[int, np.memmap] = {}
        for k_str, info in m["shards"].items():
            k = int(k_str)
            path = self.folder / info["file"]
            try:
                if k >= len(ranges) or (info["start"], info["stop"]) != ranges[k]:
                    raise ValueError("its rows do not match the manifest's shard size")
                if file_sha256(path) != info["sha256"]:
                    raise ValueError("checksum mismatch: its bytes were changed")
                arr = np.load(path, mmap_mode="r")
                if arr.shape != (ranges[k][1] - ranges[k][0], *self.row_shape) or str(arr.dtype) != self.dtype:
                    raise ValueError(f"shape {arr.shape} {arr.dtype} differs from the manifest's")
            except (OSError, ValueError, TypeError) as e:
                warn(f"feature cache shard {path} is damaged ({e}); recomputing it")
                continue
            out[k] = arr
            self.shards[k] = info
        return out

    def complete(self, valid: dict[int, np.memmap]) -> bool:
        return len(valid) == len(shard_ranges(self.n, self.shard_rows))

    def write_shard(self, k: int, start: int, array: np.ndarray) -> np.memmap:
        """Write shard k (rows ``start ..``) atomically, record it in the manifest, return it memory-mapped."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{k:05d}.npy"
        path = self.folder / name
        array = np.ascontiguousarray(array, dtype=self.dtype)
        digest: list[str] = []

        def write(tmp: Path) -> None:  # the checksum of the bytes written, taken before they are renamed into place
            _save_npy(tmp, array)
            digest.append(file_sha256(tmp))

        atomic_write(path, write)
        self.row_shape = list(array.shape[1:])
        self.shards[k] = {"file": name, "start": start, "stop": start + len(array), "sha256": digest[0]}
        self._write_manifest()
        return np.load(path, mmap_mode="r")

    def _write_manifest(self) -> None:
        m = {"format": FORMAT, "describe": self.describe, "n": self.n, "row_shape": self.row_shape,
             "dtype": self.dtype, "shard_rows": self.shard_rows,
             "shards": {str(k): v for k, v in sorted(self.shards.items())},
             "complete": len(self.shards) == len(shard_ranges(self.n, self.shard_rows))}
        atomic_write(self.manifest_path, lambda p: p.write_text(json.dumps(m, indent=1) + "\n"))

    def probe_writable(self) -> str | None:
        """None when shards can be written into the folder, else why not. Sweeps the temporary files that
        killed writes left behind (untouched for ``STALE_TMP_S``; a live writer keeps its file fresh)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / ".write-test", lambda p: p.write_bytes(b""))
            os.unlink(self.folder / ".write-test")
        except (OSError, FileError) as e:  # atomic_write reports an OSError as a FileError
            return f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        now = time.time()
        for tmp in self.folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_TMP_S:
                    tmp.unlink()
        return None
