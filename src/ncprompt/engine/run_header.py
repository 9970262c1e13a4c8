"""What a run says about itself before it starts: the environment and the header of ``train.log``.

:func:`environment` (also results.json's ``environment``): the ncprompt, torch, open_clip, numpy and Python
versions, the command line, the device, autocast dtype, torch's intra-op threads and its CPU kernels.
:func:`header_lines`: that plus the model and the weights' content digest, the dataset with the size of each
split, the classes and the templates, so a ``train.log`` read on its own (``nohup``, SLURM) says what ran.
:func:`small_image_warning`: CoOp's photo augmentation (random-resized crop down to 8% of the area, horizontal
flip) on small images.
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: shorter image side (px) under which CoOp's photo crops are warned about
SMALL_IMAGE_PX = 128
#: the arguments the CLI parsed (``ncprompt.cli.main(argv)`` sets them; None: the process's own argv)
_CLI_ARGS: dict[str, list[str] | None] = {"args": None}


def set_cli_args(args: Sequence[str]) -> None:
    """Record the arguments of the running ``ncprompt`` command (what :func:`command_line` reports)."""
    _CLI_ARGS["args"] = list(args)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: ``ncprompt ARGS`` for the CLI (``python -m ncprompt`` included), else the argv."""
    if argv is None and _CLI_ARGS["args"] is not None:
        return shlex.join(["ncprompt", *_CLI_ARGS["args"]])
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    head = Path(argv[0]).name
    if head in ("ncprompt", "cli.py", "__main__.py") or argv[0].endswith(("ncprompt/cli.py", "ncprompt/__main__.py")):
        argv = ["ncprompt", *argv[1:]]
    return shlex.join(argv)


def environment(backbone: Any = None) -> dict[str, Any]:
    """Versions, the command, and (with a backbone) its device and dtype; torch's threads and CPU kernels."""
    import numpy
    import open_clip
    import torch

    from ncprompt import __version__

    env: dict[str, Any] = {
        "versions": {"ncprompt": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version()},
        "command": command_line(),
        # what decides a CPU result's last bits besides the inputs (docs/reliability.md): threads and SIMD kernels
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if backbone is not None:
        env.update(device=str(backbone.device), precision=backbone.precision)
    return env


def _names(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def header_lines(env: dict[str, Any], info: dict[str, Any], weights: str | None, method: str) -> list[str]:
    """The header of ``train.log`` from :func:`environment`, results.json's ``info`` and the weights digest."""
    v = env["versions"]
    classes, sizes, ds = info.get("classes", {}), info.get("sizes", {}), info.get("dataset", {})
    scored = sizes.get("scored", "test")
    split_sizes = ", ".join(f"{scored} {k} {n}" for k, n in sizes.get("test", {}).items())
    targets = ", ".join(f"{k} {n}" for k, n in (sizes.get("targets") or {}).items())
    lines = [
        f"=== ncprompt {v['ncprompt']} run, {time.strftime('%Y-%m-%d %H:%M:%S %Z')} ===",
        f"versions: torch {v['torch']}, open_clip {v['open_clip']}, numpy {v['numpy']}, python {v['python']}",
        f"command: {env['command']}",
        f"device: {env.get('device', '?')}, dtype {env.get('precision', '?')}, threads {env['threads']}, "
        f"CPU kernels {env['cpu_capability']}",
        f"model: {info.get('model', {}).get('name', '?')}, weights {weights or '?'}",
        f"method: {method}",
        f"dataset: {ds.get('name', '?')} (root {ds.get('root', '-')}): train {sizes.get('train', '?')} images"
        f"{', ' + split_sizes if split_sizes else ''}{'; targets ' + targets if targets else ''}",
        f"classes ({len(classes.get('all', []))}): {_names(classes.get('all', []))}",
    ]
    if "base" in classes:
        lines += [f"base classes: {_names(classes['base'])}", f"new classes: {_names(classes['new'])}"]
    if info.get("templates") is not None:
        lines.append(f"templates: {' | '.join(info['templates'])}")
    return lines


def small_image_warning(sizes: Sequence[tuple[int, int]], crop_min: float, flip: bool) -> str | None:
    """A warning when CoOp's photo augmentation (crops down to ``crop_min`` of the area, flips) meets training
    images whose shorter side is under :data:`SMALL_IMAGE_PX`, else None."""
    if not sizes or (crop_min >= 0.5 and not flip):
        return None
    short = min(min(w, h) for w, h in sizes)
    if short >= SMALL_IMAGE_PX:
        return None
    return (f"warning: the training images are small ({short} px on the shorter side) and the training views use "
            f"photo augmentation (random-resized crops down to {crop_min:.0%} of the area"
            f"{', horizontal flips' if flip else ''}), which can cut away or mirror what tells small images apart; "
            "consider --no-flip --crop-min 0.5")
