"""A run folder's identity and ownership: its config fingerprint, its inputs and an exclusive lock.

* ``config.yaml`` records the whole config; what determines the result is its fingerprint
  (:meth:`RunConfig.fingerprint_items`: every key but the output/cache locations). A run resumes
  (or reuses its results) only when the new config has the same fingerprint; otherwise a
  :class:`RunFolderError` names the differing keys, before anything in the folder is touched.
* ``inputs.json`` records what the config does not say: the content of the weights and of the data
  (class names, templates, the sampled training images, every test split; see
  ``Experiment.inputs``). A finished or checkpointed run is reused only when they are the same
  again, so new weights or a changed dataset under an unchanged config never return old results;
  a folder whose run predates this record is refused too (its inputs cannot be proven).
* One process at a time: ``.lock`` is held with ``fcntl.flock(LOCK_EX | LOCK_NB)`` for the whole
  run; the kernel releases it when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ncprompt.config import ConfigError, RunConfig, load_yaml, save_yaml
from ncprompt.config.run import flatten
from ncprompt.utils import atomic_write_bytes

LOCK = ".lock"
#: prefix of the inputs that hold a location-independent digest (implied by the others; not compared on resume)
PORTABLE = "portable."
#: what a run writes (removed by ``--no-resume``; anything else in the folder is left alone)
INPUTS = "inputs.json"
RUN_FILES = ("config.yaml", INPUTS, "train_config.json", "metrics.jsonl", "train.log", "prompt.safetensors",
             "text_features.safetensors", "image_means.safetensors", "results.json", "analysis.json", "analysis.md")
RUN_DIRS = ("checkpoint", "plots")


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked (other settings, in use, not a run folder)."""


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def config_difference(old: RunConfig, new: RunConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (old value, new value)} over the fingerprinted keys that differ."""
    a, b = old.fingerprint_items(), new.fingerprint_items()
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class RunFolder:
    """The folder of one run; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- identity ---------------------------------------------------------------------------
    def recorded_config(self) -> RunConfig | None:
        """The config a previous run recorded here, or None for a fresh folder."""
        f = self.path / "config.yaml"
        if not f.is_file():
            return None
        try:
            data = load_yaml(f)
            if "method_options" in data or "model" in data:  # flat keys: written before the typed tree
                raise ConfigError("it was written by an earlier ncprompt whose defaults may differ, so a match "
                                  "cannot be proven")
            cfg = RunConfig.from_dict(data, where=str(f))
            unset = sorted(set(cfg.fingerprint_items()) - set(flatten(data)))
            if unset:  # an option added since (e.g. prograd's templates): its then-behaviour may not be its default
                raise ConfigError(f"it was written by an earlier ncprompt without {', '.join(unset[:3])}, so a "
                                  "match cannot be proven")
            return cfg
        except ConfigError as e:
            raise RunFolderError(f"{self.path} holds a config.yaml that cannot be read ({e}); rerun with "
                                 "--no-resume to start over, or choose another --output") from None

    def check(self, cfg: RunConfig, resume: bool = True) -> str:
        """"new", "resume" (same fingerprint) or "restart" (``resume=False`` on an earlier run); raises on
        anything else. Reads only."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--output {self.path} is an existing file; give a folder path")
        others = [p.name for p in self.path.iterdir() if p.name != LOCK] if self.path.is_dir() else []
        if not others:
            return "new"
        if not any(n in RUN_FILES or n in RUN_DIRS for n in others):
            raise RunFolderError(f"--output {self.path} is a non-empty folder that is not a run folder "
                                 f"(holds {', '.join(sorted(others)[:3])}); choose another --output")
        if not resume:
            return "restart"
        old = self.recorded_config()
        if old is None:
            raise RunFolderError(f"{self.path} holds run files but no config.yaml, so they cannot be checked; rerun "
                                 "with --no-resume to start over, or choose another --output")
        diff = config_difference(old, cfg)
        if diff:
            shown = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in list(diff.items())[:6])
            more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
            raise RunFolderError(f"{self.path} holds a run with other settings ({shown}{more}); rerun with "
                                 "--no-resume to start it over, or choose another --output")
        return "resume"

    def recorded_inputs(self) -> dict[str, str] | None:
        """The inputs (weights and data digests) a previous run recorded here, or None."""
        f = self.path / INPUTS
        if not f.is_file():
            return None
        try:
            data = json.loads(f.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError) as e:
            raise RunFolderError(f"{f} cannot be read ({e}); rerun with --no-resume to start over, or choose "
                                 "another --output") from None

    def check_inputs(self, inputs: dict[str, str]) -> None:
        """Refuse (:class:`RunFolderError`) to reuse this folder's run when it ran on other weights or
        data than ``inputs``, or when it left results or a checkpoint without recording its inputs."""
        old = self.recorded_inputs()
        if old is None:
            left = [n for n in ("results.json", "prompt.safetensors", "checkpoint") if (self.path / n).exists()]
            if left:
                raise RunFolderError(f"{self.path} holds a run ({left[0]}) that recorded no inputs.json (an earlier "
                                     "ncprompt), so its weights and data cannot be checked; rerun with --no-resume "
                                     "to start it over, or choose another --output")
            return
        # the portable digests follow from the others (and folders of earlier versions lack them)
        diff = [k for k in sorted(set(old) | set(inputs)) if old.get(k) != inputs.get(k) and not k.startswith(PORTABLE)]
        if diff:
            what = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
            raise RunFolderError(f"{self.path} holds a run on other inputs with the same settings (changed: {what}); "
                                 "rerun with --no-resume to start it over, or choose another --output")

    def prepare(self, cfg: RunConfig, resume: bool = True, inputs: dict[str, str] | None = None) -> str:
        """Validate (:meth:`check`, and :meth:`check_inputs` when resuming), then clear a restarted run's
        files and record ``cfg`` and ``inputs``. Call while holding the lock."""
        state = self.check(cfg, resume)
        if state == "resume" and inputs is not None:
            self.check_inputs(inputs)
        if state == "restart":
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            for name in RUN_DIRS:
                shutil.rmtree(self.path / name, ignore_errors=True)
        if state != "resume" or not (self.path / "config.yaml").is_file():
            save_yaml(self.path / "config.yaml", cfg)
        if inputs is not None and (state != "resume" or not (self.path / INPUTS).is_file()):
            atomic_write_bytes(self.path / INPUTS, (json.dumps(inputs, indent=1) + "\n").encode())
        return state

    def finished(self, cfg: RunConfig, inputs: dict[str, str]) -> bool:
        """True when this folder holds the finished run of ``cfg`` on ``inputs`` (same fingerprint, same
        weights and data, results.json); other settings or inputs raise :class:`RunFolderError`."""
        if not (self.path / "results.json").is_file() or self.check(cfg) != "resume":
            return False
        self.check_inputs(inputs)
        return True

    # --- ownership --------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the exclusive lock (non-blocking); :class:`RunFolderError` when another process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderError(f"{self.path} is in use by another ncprompt process (pid {holder}); wait for it "
                                 "to finish, or choose another --output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    @property
    def locked(self) -> bool:
        """True while this object holds the lock."""
        return self._lock_fd is not None

    def release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def open(self, cfg: RunConfig, resume: bool = True, inputs: dict[str, str] | None = None) -> Iterator[str]:
        """Lock, validate and record ``cfg`` (and ``inputs``); yields the state ("new", "resume", "restart")."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--output {self.path} is an existing file; give a folder path")
        self.acquire()
        try:
            yield self.prepare(cfg, resume, inputs)
        finally:
            self.release()
