"""Feature cache benchmarks: extraction throughput with DataLoader workers, and the cache's peak memory.

1. Extraction: images/s of ``FeatureCache(enabled=False, workers=W).features(..., train=True)`` for W = 0, 1, 2 on
   JPEG files (decoded + augmented per view in the workers, encoded in the main process), pocket model by default.
   Each W is timed ``--reps`` times in interleaved rounds; the features are checked bitwise equal across W.
   Live path (MaPLe, IVLP, PromptSRC): images/s of ``PixelViews(..., workers=W).batches(plan)`` (decode + augment
   of one training epoch, batches of 32, one random view per image, no encoding) for the same W: the first pass
   starts the persistent workers, the second is the steady state of later epochs; pixels checked bitwise equal.
2. Memory: a synthetic dataset of ``--n`` images x ``--views`` views x ``--dim`` float32 features (random numbers
   written shard by shard, no encoder), in child processes so that each peak is its own:
     * ``ram``: the whole array held in RAM (what the cache did before: one (N, views, E) tensor), then
       ``--gather-batches`` training reads (one view per image, as the trainer reads them);
     * ``mmap-build``: the same features written as checksummed shards (one shard in RAM at a time);
     * ``mmap-read``: the shards opened (checksums verified) and memory-mapped, then the same reads.
   Peak RSS is ``VmHWM`` (file pages included); ``RssAnon`` (process-private memory) and ``RssFile`` (pages of
   mapped files, which the kernel can drop) are read from /proc/self/status after each phase.

    .venv/bin/python benchmarks/bench_cache.py                     # both parts, writes results/cache.json
    .venv/bin/python benchmarks/bench_cache.py --part extract --n-images 256 --reps 1   # quick
    .venv/bin/python benchmarks/bench_cache.py --part extract --n-images 64 --reps 1 --dry-run   # runs, records nothing
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, CpuMonitor, finish_info, machine_info, markdown_table, summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench_cache:begin -->", "<!-- bench_cache:end -->"


def proc_status() -> dict[str, float]:
    """RssAnon, RssFile and VmHWM of this process in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
            out[key] = int(val.split()[0]) / 1024
    return out


def peak_rss_mib() -> float:
    """Peak RSS of this process image (VmHWM: unlike ru_maxrss it does not carry the parent's peak over exec)."""
    return proc_status().get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


# --- part 1: extraction ---------------------------------------------------------------------------

def make_jpegs(folder: Path, n: int, size: int) -> list[Path]:
    from PIL import Image

    from ncprompt.data.sources import load_fashion_mnist_arrays

    x = load_fashion_mnist_arrays()["train_x"][:n]
    rng = np.random.default_rng(0)
    paths = []
    for i, a in enumerate(x):
        tint = rng.uniform(0.4, 1.0, 3)
        rgb = (np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC))[..., None] * tint).astype(np.uint8)
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(rgb).save(paths[-1], quality=90)
    return paths


def bench_extract(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ncprompt.backbones import load_backbone
    from ncprompt.data.base import FileImages
    from ncprompt.data.cache import FeatureCache

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = load_backbone(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.n_images, args.image_size)
        images = FileImages(paths, [0] * len(paths))
        times: dict[int, list[float]] = {w: [] for w in args.workers}
        feats: dict[int, Any] = {}
        mon = CpuMonitor()
        load_before = os.getloadavg()
        FeatureCache(enabled=False, workers=0).features(backbone, images.subset(range(16)), views=args.views,
                                                        train=True)  # warm-up
        for _ in range(args.reps):
            for w in args.workers:
                t0 = time.perf_counter()
                feats[w] = FeatureCache(enabled=False, workers=w).features(backbone, images, views=args.views,
                                                                           train=True, batch_size=args.batch)
                times[w].append(time.perf_counter() - t0)
        cpu = mon.read()
        live = bench_live(backbone, images, args)
    same = all(torch.equal(feats[args.workers[0]], f) for f in feats.values())
    rows = {str(w): {**summary(ts), "images_per_s": args.n_images / min(ts),
                     "views_per_s": args.n_images * args.views / min(ts)} for w, ts in times.items()}
    return {"model": args.model, "n_images": args.n_images, "image_size": args.image_size, "views": args.views,
            "batch": args.batch, "threads": args.threads, "workers": rows, "bitwise_equal_across_workers": same,
            "live": live,
            "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()), "cpu": cpu}


def bench_live(backbone: Any, images: Any, args: argparse.Namespace, batch: int = 32) -> dict[str, Any]:
    """Decode + augment throughput of the live training path (one epoch's plan), per number of workers."""
    import hashlib

    import torch

    from ncprompt.data.cache import PixelViews

    n = len(images)
    g = torch.Generator().manual_seed(0)
    order, view = torch.randperm(n, generator=g), torch.randint(args.views, (n,), generator=g)
    plan = [(order[s : s + batch], view[s : s + batch]) for s in range(0, n, batch)]
    first: dict[int, list[float]] = {w: [] for w in args.workers}
    steady: dict[int, list[float]] = {w: [] for w in args.workers}
    digests: dict[int, str] = {}
    for _ in range(args.reps):
        for w in args.workers:
            pv = PixelViews(backbone, images, args.views, 0, workers=w)
            for times in (first[w], steady[w]):
                h = hashlib.sha256()
                t0 = time.perf_counter()
                for x in pv.batches(plan):
                    h.update(x.numpy().tobytes())
                times.append(time.perf_counter() - t0)
                digests[w] = h.hexdigest()
            del pv  # stops its workers
    rows = {str(w): {"first_pass_images_per_s": n / min(first[w]), "images_per_s": n / min(steady[w]),
                     **summary(steady[w])} for w in args.workers}
    return {"batch": batch, "workers": rows, "bitwise_equal_across_workers": len(set(digests.values())) == 1}


# --- part 2: memory -------------------------------------------------------------------------------

def synthetic_shard(k: int, rows: int, views: int, dim: int) -> np.ndarray:
    return np.random.default_rng(k).random((rows, views, dim), dtype=np.float32)


def epoch_of_gathers(get: Any, n: int, views: int, batch: int, max_batches: int) -> dict[str, float]:
    """The trainer's reads: a random order, one random view per image, batches of ``batch`` (at most
    ``max_batches`` of them; 0: a whole epoch)."""
    import torch

    g = torch.Generator().manual_seed(0)
    order, view = torch.randperm(n, generator=g), torch.randint(views, (n,), generator=g)
    stops = range(0, n, batch)[: max_batches or None]
    t0 = time.perf_counter()
    check = 0.0
    for s in stops:
        check += float(get(order[s : s + batch], view[s : s + batch])[:, 0].sum())
    return {"s": time.perf_counter() - t0, "batches": len(stops),
            "ms_per_batch": 1000 * (time.perf_counter() - t0) / len(stops), "checksum": check}


def child(mode: str, folder: Path, n: int, views: int, dim: int, shard_rows: int, batch: int,
          max_batches: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # gathers are memory-bound; one thread does not spin-wait under a competing load

    from ncprompt.data.feature_store import FeatureStore, ShardedFile, shard_ranges

    out: dict[str, Any] = {"mode": mode, "baseline": {**proc_status(), "peak_rss": peak_rss_mib()}}
    ranges = shard_ranges(n, shard_rows)
    t0 = time.perf_counter()
    if mode == "ram":
        full = np.empty((n, views, dim), dtype=np.float32)
        for k, (a, b) in enumerate(ranges):
            full[a:b] = synthetic_shard(k, b - a, views, dim)
        t = torch.from_numpy(full)
        out["build_s"] = time.perf_counter() - t0
        out["after_build"] = proc_status()
        out["epoch"] = epoch_of_gathers(lambda i, v: t[i, v], n, views, batch, max_batches)
    elif mode == "mmap-build":
        entry = ShardedFile(folder, {"synthetic": [n, views, dim]}, n, shard_rows)
        for k, (a, b) in enumerate(ranges):
            entry.write_shard(k, a, synthetic_shard(k, b - a, views, dim))
        out["build_s"] = time.perf_counter() - t0
        out["after_build"] = proc_status()
    else:
        entry = ShardedFile(folder, {"synthetic": [n, views, dim]}, n, shard_rows)
        valid = entry.valid_shards()
        assert entry.complete(valid), "run mmap-build first"
        store = FeatureStore([valid[k] for k in sorted(valid)])
        out["open_and_verify_s"] = time.perf_counter() - t0
        out["after_open"] = proc_status()
        out["epoch"] = epoch_of_gathers(store.gather, n, views, batch, max_batches)
    out["end"] = proc_status()
    out["peak_rss"] = peak_rss_mib()
    return out


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"n": args.n, "views": args.views_mem, "dim": args.dim, "shard_rows": args.shard_rows,
                           "gib": args.n * args.views_mem * args.dim * 4 / 2**30,
                           "loadavg_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for mode in ("ram", "mmap-build", "mmap-read"):
            cmd = [sys.executable, __file__, "--child", mode, "--child-dir", tmp, "--n", str(args.n),
                   "--views-mem", str(args.views_mem), "--dim", str(args.dim), "--shard-rows", str(args.shard_rows),
                   "--gather-batches", str(args.gather_batches)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"# {mode}: peak RSS {res[mode]['peak_rss']:.0f} MiB", flush=True)
    res["loadavg_after"] = list(os.getloadavg())
    return res


# --- report ---------------------------------------------------------------------------------------

def markdown(r: dict[str, Any]) -> str:
    parts = []
    if "extract" in r:
        e = r["extract"]
        rows = [[w, f"{v['images_per_s']:.0f}", f"{v['views_per_s']:.0f}", f"{v['min_s']:.2f} s",
                 f"{v['median_s']:.2f} s"] for w, v in e["workers"].items()]
        parts.append(
            f"Extraction: {e['n_images']} JPEG files ({e['image_size']}x{e['image_size']}), {e['views']} augmented "
            f"views each, model `{e['model']}`, batch {e['batch']}, {e['threads']} torch threads in the main process; "
            f"best of {len(next(iter(e['workers'].values()))['all_s'])} interleaved rounds. Features bitwise equal "
            f"for every number of workers: {e['bitwise_equal_across_workers']}. Load average before/after: "
            f"{e['loadavg_before'][0]:.2f}/{e['loadavg_after'][0]:.2f}; other processes took "
            f"{100 * e['cpu']['others_share']:.0f}% of the CPUs.\n\n"
            + markdown_table(["workers", "images/s", "views/s", "best", "median"], rows))
        if "live" in e:
            lv = e["live"]
            rows = [[w, f"{v['images_per_s']:.0f}", f"{v['first_pass_images_per_s']:.0f}", f"{v['min_s']:.2f} s"]
                    for w, v in lv["workers"].items()]
            parts.append(
                f"Live path (decode + augment of one training epoch of the same files, batches of {lv['batch']}, "
                f"no encoding; the first pass starts the persistent workers). Pixels bitwise equal for every number "
                f"of workers: {lv['bitwise_equal_across_workers']}.\n\n"
                + markdown_table(["workers", "images/s (later epochs)", "images/s (first epoch)", "best"], rows))
    if "memory" in r:
        m = r["memory"]
        base = m["ram"]["baseline"]["VmRSS"]
        rows = [
            ["in RAM (previous design)", f"{m['ram']['peak_rss']:.0f}", f"{m['ram']['after_build']['RssAnon']:.0f}",
             f"{m['ram']['build_s']:.1f} s", f"{m['ram']['epoch']['ms_per_batch']:.3f} ms"],
            ["memory-mapped shards: build", f"{m['mmap-build']['peak_rss']:.0f}",
             f"{m['mmap-build']['after_build']['RssAnon']:.0f}", f"{m['mmap-build']['build_s']:.1f} s", "-"],
            ["memory-mapped shards: open + verify + reads", f"{m['mmap-read']['peak_rss']:.0f}",
             f"{m['mmap-read']['end']['RssAnon']:.0f} (file pages {m['mmap-read']['end']['RssFile']:.0f})",
             f"{m['mmap-read']['open_and_verify_s']:.1f} s (open)",
             f"{m['mmap-read']['epoch']['ms_per_batch']:.3f} ms"],
        ]
        parts.append(
            f"Memory: synthetic {m['n']:,} images x {m['views']} views x {m['dim']} float32 = {m['gib']:.2f} GiB of "
            f"features, shards of {m['shard_rows']} images; each row a separate process (interpreter + torch: "
            f"{base:.0f} MiB RSS, {m['ram']['baseline']['RssAnon']:.0f} MiB of it private, before any feature). "
            f"Gathers: the trainer's reads (random order, one view per image, batches of 32), "
            f"{m['ram']['epoch']['batches']} batches, 1 torch thread.\n\n"
            + markdown_table(["cache", "peak RSS (MiB)", "private RSS (MiB)", "build / open", "gather per batch"],
                             rows)
            + "\n\nPrivate RSS (RssAnon) is the memory the process owns. The memory-mapped rows stay at the "
            "interpreter's baseline: building holds one shard, reading holds one batch. Their peak RSS counts "
            "page-cache pages of the shard files that the kernel maps around each touched row (fault-around), "
            "which are shared and dropped under memory pressure. Build times include drawing the random numbers; "
            "for the shards they also include writing, fsync and SHA-256. Open = verifying every shard's "
            "checksum (reading all the bytes once).")
    return "\n\n".join(parts)


def write_doc(md: str, info: dict[str, Any]) -> None:
    section = (f"{BEGIN}\n## Feature cache: parallel extraction and memory-mapped shards\n\n"
               "`benchmarks/bench_cache.py` (the command is in its docstring). The machine is shared with other "
               "sessions' jobs while this runs, so the load is recorded with each number: throughput under load "
               f"is a lower bound. Measured {info['date']} on {info['logical_cpus']} logical CPUs ({info['cpu']}).\n\n"
               f"{md}\n{END}")
    text = DOC.read_text() if DOC.is_file() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["all", "extract", "memory"], default="all")
    p.add_argument("--model", default="pocket")
    p.add_argument("--n-images", type=int, default=1024)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--views-mem", type=int, default=8)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--shard-rows", type=int, default=4096)
    p.add_argument("--gather-batches", type=int, default=1000, help="training reads timed (0: a whole epoch)")
    p.add_argument("--tmp", default=None, help="folder for the synthetic shards (default: the system's)")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--dry-run", action="store_true", help="print the tables only: write neither results/ nor docs/")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.child_dir), args.n, args.views_mem, args.dim, args.shard_rows,
                               32, args.gather_batches)))
        return
    logging.disable(logging.WARNING)
    info = machine_info(args.threads)
    info["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    path = RESULTS_DIR / "cache.json"
    keep = path.is_file() and not args.dry_run  # keep the part not rerun
    out: dict[str, Any] = json.loads(path.read_text()) if keep else {}
    out["machine"] = info
    if args.part in ("all", "extract"):
        out["extract"] = bench_extract(args)
    if args.part in ("all", "memory"):
        out["memory"] = bench_memory(args)
    finish_info(info)
    info["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    out["markdown"] = markdown(out)
    if args.dry_run:
        print(out["markdown"])
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(out["markdown"])
    if not args.no_doc:
        write_doc(out["markdown"], info)


if __name__ == "__main__":
    main()
