"""What a run says while it runs: a tqdm bar on a terminal, one line per step everywhere else.

A :class:`ProgressLog` tracks ``total`` steps (epochs of a run, runs of a grid). Each finished
step is

* shown as a tqdm bar update when stderr is a terminal (and bars are on), or else
* written as one line on stderr (``nohup``, SLURM, CI, pipes), and
* always appended, as the same line, to a log file (``train.log`` in a run folder, ``grid.log`` in
  a grid folder), so a log survives whatever happens to the terminal.

Notes (resuming, warnings, interruption) are shown in both modes. The ETA after d of T steps is
(elapsed time of the steps that ran here) / (their number) * (T - d); steps that were only
reused (a finished run of a resumed grid) do not enter the rate.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

_ECHO = {"on": True}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within this block progress goes to log files only (no bars, no stderr lines): the runs of
    a grid, whose own progress is one line per run."""
    from ncprompt.utils import set_progress_lines

    old = _ECHO["on"]
    _ECHO["on"] = False
    old_lines = set_progress_lines(False)  # nor the feature extraction's progress lines
    try:
        yield
    finally:
        _ECHO["on"] = old
        set_progress_lines(old_lines)


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``; ``4.2`` -> ``4.2s``."""
    if seconds != seconds or seconds < 0:  # NaN or negative: unknown
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def epoch_number(record: dict[str, Any]) -> int:
    """The epoch of a metrics.jsonl record counted from 1: its ``epoch`` (records that carry ``epochs``), or
    ``epoch + 1`` for the 0-based records of earlier versions."""
    return int(record["epoch"]) if "epochs" in record else int(record["epoch"]) + 1


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One epoch of a training log as a line: epoch, loss, lr, accuracies, s/epoch."""
    parts = [f"epoch {epoch_number(record)}/{epochs}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}"]
    if "train_acc" in record:
        parts.append(f"train acc {record['train_acc']:.1f}")
    parts += [f"{k.removesuffix('_acc')} acc {v:.1f}" for k, v in record.items()
              if k.endswith("_acc") and k != "train_acc" and isinstance(v, (int, float))]
    if "epoch_time_s" in record:
        parts.append(f"{record['epoch_time_s']:.2f} s/epoch")
    return "  ".join(parts)


class ProgressLog:
    """Progress of ``total`` steps named ``desc``; see the module docstring.

    Args:
        log_file: appended to (created with its folder) with every line; None: no file.
        done: steps already finished before this log started (a resumed run).
        bars: force bars on/off; default: on when stderr is a terminal and progress is enabled.
        stream: where lines go (default sys.stderr).
    """

    def __init__(self, desc: str, total: int, log_file: str | Path | None = None, unit: str = "epoch",
                 done: int = 0, bars: bool | None = None, stream: TextIO | None = None) -> None:
        from ncprompt.utils import progress_enabled

        self.desc, self.total, self.unit = desc, total, unit
        self.done = done
        self.echo = _ECHO["on"]
        self.stream = stream if stream is not None else sys.stderr
        self.log_file = Path(log_file) if log_file is not None else None
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        use_bars = (progress_enabled() if bars is None else bars) and self.echo
        self.bar = None
        if use_bars:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit=unit, leave=False, file=self.stream)
        self._ran = 0
        self._ran_seconds = 0.0
        self._t = time.monotonic()

    # --- output -----------------------------------------------------------------------------
    def _file(self, line: str) -> None:
        if self.log_file is not None:
            with open(self.log_file, "a") as f:
                f.write(line + "\n")

    def _stamp(self, text: str) -> str:
        return f"{time.strftime('%H:%M:%S')} [{self.desc}] {text}"

    def note(self, text: str) -> None:
        """A line shown in every mode (resume, warnings, interruption) and logged."""
        line = self._stamp(text)
        self._file(line)
        if not self.echo:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def step(self, text: str, ran: bool = True, **postfix: Any) -> None:
        """One finished step: a bar update on a terminal, else a line with the ETA; always logged.

        ``ran=False``: the step was reused, not computed here (not counted in the ETA rate)."""
        now = time.monotonic()
        self.done += 1
        if ran:
            self._ran += 1
            self._ran_seconds += now - self._t
        self._t = now
        left = self.total - self.done
        eta = self._ran_seconds / self._ran * left if self._ran else float("nan")
        tail = f"  ETA {format_duration(eta)}" if left > 0 else ""
        line = self._stamp(f"{text}{tail}")
        self._file(line)
        if not self.echo:
            return
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(**postfix)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
