"""Shared helpers of the benchmarks: class names, machine description, timing, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# CIFAR-100's class names (spaces for underscores): 100 common object words of 1-3 BPE tokens.
CLASSNAMES = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn mower", "leopard", "lion", "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
]
assert len(CLASSNAMES) == 100

PRETRAIN_PATTERN = "ncprompt.pocket.pretrain"


# For K > 100 (the K = 1000 timing): the 100 names, then each prefixed by one of these words.
_PREFIXES = ["", "small", "red", "old", "wild", "toy", "giant", "baby", "striped", "wooden"]


def classnames(k: int) -> list[str]:
    """K class names of 1-4 BPE tokens: CIFAR-100's names, then prefixed copies (up to 1,000)."""
    names = [f"{p} {c}".strip() for p in _PREFIXES for c in CLASSNAMES]
    if not 2 <= k <= len(names):
        raise ValueError(f"K must be in [2, {len(names)}], got {k}")
    return names[:k]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pretrain_running() -> bool:
    """True while the project's pretraining job (which would distort timings) is running."""
    try:
        r = subprocess.run(["pgrep", "-f", PRETRAIN_PATTERN], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return False
    own = str(os.getpid())
    return any(pid and pid != own for pid in r.stdout.split())


def busy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other processes using noticeable CPU right now (ps's lifetime %CPU, a rough indicator)."""
    try:
        r = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return []
    out = []
    for line in r.stdout.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[0] == str(os.getpid()):
            continue
        try:
            cpu = float(parts[1])
        except ValueError:
            continue
        if cpu >= min_cpu:
            out.append(f"{parts[0]} {cpu:.0f}% {parts[2][:80]}")
    return out


class CpuMonitor:
    """CPU time used by *other* processes while this one runs, from /proc/stat (busy jiffies) minus our own
    CPU time: ``others_share`` is the fraction of (wall x logical CPUs) they took (0 on an idle machine)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.steal0, self.own0 = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float]:
        hz = os.sysconf("SC_CLK_TCK")
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            fields = [0] * 8
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        t = os.times()
        return time.perf_counter(), (user + nice + system + irq + softirq) / hz, steal / hz, t.user + t.system

    def read(self) -> dict[str, float]:
        t1, busy1, steal1, own1 = self._sample()
        wall = max(t1 - self.t0, 1e-9)
        cap = wall * (os.cpu_count() or 1)
        own = own1 - self.own0
        others = max(busy1 - self.busy0 - own, 0.0)
        return {"wall_s": wall, "own_cpu_s": own, "own_share": own / cap, "others_share": others / cap,
                "steal_share": (steal1 - self.steal0) / cap}


def wait_until_idle(max_wait_s: float, window_s: float = 10.0, threshold: float = 0.1) -> dict[str, Any]:
    """Wait (up to ``max_wait_s``) until the pretraining job is gone and other processes use < ``threshold`` of
    the CPUs over a ``window_s`` window. Returns what was seen."""
    t0 = time.perf_counter()
    while True:
        mon = CpuMonitor()
        time.sleep(window_s)
        share = mon.read()["others_share"]
        busy = pretrain_running()
        waited = time.perf_counter() - t0
        if (not busy and share < threshold) or waited >= max_wait_s:
            return {"waited_s": waited, "idle": not busy and share < threshold, "others_share_last_window": share,
                    "pretrain_running": busy}
        print(f"# waiting for an idle machine (pretrain running: {busy}, others' CPU share {share:.0%}, "
              f"{waited:.0f} s so far)", flush=True)


def machine_info(threads: int) -> dict[str, Any]:
    import open_clip

    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "torch_threads": threads,
        "loadavg_at_start": list(os.getloadavg()),
        "pretrain_running_at_start": pretrain_running(),
        "busy_processes_at_start": busy_processes(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def finish_info(info: dict[str, Any], monitor: CpuMonitor | None = None) -> None:
    if monitor is not None:
        info["cpu_during_run"] = monitor.read()
    info["loadavg_at_end"] = list(os.getloadavg())
    info["pretrain_running_at_end"] = pretrain_running()
    info["busy_processes_at_end"] = busy_processes()


def time_calls(fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(fn: Callable[[], Any], reps: int, warmup: int = 1) -> dict[str, Any]:
    """:func:`summary` of :func:`time_calls`, plus the CPU share other processes took meanwhile."""
    mon = CpuMonitor()
    s = summary(time_calls(fn, reps, warmup))
    s["others_cpu_share"] = mon.read()["others_share"]
    return s


def summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "reps": len(times),
            "all_s": times}


def fmt_s(x: float) -> str:
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1000:.1f} ms"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
