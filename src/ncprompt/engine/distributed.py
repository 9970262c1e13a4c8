"""Runs on several processes with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

Launch (both are the same): ``ncprompt train --nproc 2 ...`` re-executes the CLI as
``python -m torch.distributed.run --standalone --nproc_per_node 2 -m ncprompt.cli train ...``; on several
nodes ``--nnodes N --node-rank R --rdzv-endpoint HOST:PORT`` replace ``--standalone`` (:func:`node_options`).
Every rank joins the process group described by torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT): gloo on CPU, NCCL on CUDA (one device per local rank).

Data parallelism keeps the single-process maths. Global batch b (the same indices, in the same
order, as one process would draw) is cut into contiguous rank slices of n_r samples, sum_r n_r = |b|.
Rank r back-propagates w_r * W * L_r with w_r = n_r / |b|; DDP averages gradients over the W
ranks, so the update is

    (1/W) sum_r (n_r W / |b|) grad L_r = grad (1/|b|) sum_{i in b} l_i        (per-sample means)
    (1/W) sum_r (n_r W / |b|) grad R   = grad R                               (rank-independent terms)

i.e. exactly the single-process gradient of the global batch, whatever W divides. Logged epoch
means are all-reduced with the same weights. Batch statistics (NPT's EMA image class means) are
summed over ranks by a differentiable all-reduce on a separate process group.

The module also holds rank/world helpers, row sharding and gathering, rank-0-only writing, a
``local_only`` mode (rank 0 trains alone while the others wait; cheaper for cached features),
and the per-worker CUDA device assignment of grids.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

#: environment variable choosing how prompts train under torchrun: auto | ddp | main
MODE_ENV = "NCPROMPT_DDP"
#: seconds a rank waits in a collective (rank 0 may train alone for hours in "main" mode)
TIMEOUT_ENV = "NCPROMPT_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 12 * 3600

_STATE: dict[str, Any] = {"local_only": 0, "aux_group": None, "owned": False}


class DistributedError(ValueError):
    """A distributed run cannot go ahead as configured; the message says how to fix it."""


# --- who am I ---------------------------------------------------------------------------------
def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def under_torchrun() -> bool:
    """True when torchrun (or another launcher) describes a process group of more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    """Ranks taking part in collectives now (1 outside a process group and inside :func:`local_only`)."""
    if _STATE["local_only"] or not is_initialized():
        return 1
    return dist.get_world_size()


def rank() -> int:
    """This process's rank (0 outside a process group and inside :func:`local_only`)."""
    if _STATE["local_only"] or not is_initialized():
        return 0
    return dist.get_rank()


def is_main() -> bool:
    """True on the process that writes files: global rank 0 (or the only process)."""
    return not is_initialized() or dist.get_rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within this block this process behaves as a single process: no collectives are issued."""
    _STATE["local_only"] += 1
    try:
        yield
    finally:
        _STATE["local_only"] -= 1


# --- process group ----------------------------------------------------------------------------
def backend_for(device: str | torch.device | None) -> str:
    """NCCL when the run uses CUDA, else gloo."""
    dev = torch.device(device) if device is not None else None
    use_cuda = dev.type == "cuda" if dev is not None else torch.cuda.is_available()
    return "nccl" if use_cuda and dist.is_nccl_available() else "gloo"


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group torchrun describes (a no-op for a single process); returns whether
    a group of more than one rank is active. On CUDA each local rank takes device LOCAL_RANK, so
    a config's ``device: cuda`` means this rank's own GPU."""
    if is_initialized():
        return dist.get_world_size() > 1
    if not under_torchrun():
        return False
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; run with --nproc 1")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend, timeout=timeout)
    from ncprompt.data import cache

    cache.ROW_SHARDING[0] = sharded_rows  # live encoding of evaluation images: row shards on the ranks
    # a second group for collectives issued inside autograd (kept apart from DDP's bucket all-reduces)
    _STATE["aux_group"] = dist.new_group(backend=backend)
    _STATE["owned"] = True
    return dist.get_world_size() > 1


def teardown() -> None:
    """Leave the process group this module created (others' groups are left alone)."""
    if _STATE["owned"] and is_initialized():
        from ncprompt.data import cache

        cache.ROW_SHARDING[0] = None
        dist.destroy_process_group()
    _STATE.update(aux_group=None, owned=False)


@contextlib.contextmanager
def process_group(device: str | torch.device | None = None) -> Iterator[bool]:
    """``with process_group(cfg.device) as distributed:`` around a whole command."""
    created = not is_initialized() and init_from_env(device)
    try:
        yield world_size() > 1
    finally:
        if created:
            teardown()


@contextlib.contextmanager
def main_output() -> Iterator[None]:
    """Within this block only rank 0 prints to stdout and shows progress (errors still reach stderr)."""
    if is_main():
        yield
        return
    from ncprompt.engine.progress import quiet

    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), quiet():
        yield


@contextlib.contextmanager
def ranks_for_command(device: str | torch.device | None = None) -> Iterator[None]:
    """A CLI command under torchrun: the process group (:func:`process_group`), stdout on rank 0 only."""
    with process_group(device), main_output():
        yield


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- collectives --------------------------------------------------------------------------------
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum over ranks (a new tensor on ``t``'s device; ``t`` itself if one rank)."""
    if world_size() == 1:
        return t
    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf)
    return buf.to(t.device)


def all_reduce_floats(values: dict[str, float]) -> dict[str, float]:
    """Sum each named float over ranks (every rank must pass the same names)."""
    if world_size() == 1 or not values:
        return dict(values)
    names = sorted(values)
    summed = all_reduce_sum(torch.tensor([values[k] for k in names], dtype=torch.float64))
    return {k: float(v) for k, v in zip(names, summed.tolist())}


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks: forward all-reduces ``t``, backward all-reduces its gradient
    (so a term computed from global batch statistics back-propagates into every rank's slice)."""
    if world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_reduce

    dev = t.device
    return all_reduce(t.to(_comm_device()), group=_STATE["aux_group"]).to(dev)


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled; for small things such as logs)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def broadcast_module_(module: nn.Module | None, src: int = 0) -> None:
    """Copy rank ``src``'s trainable parameters and buffers into ``module`` on every rank."""
    if module is None or world_size() == 1:
        return
    tensors = [p for p in module.parameters() if p.requires_grad] + list(module.buffers())
    for t in tensors:
        buf = t.detach().to(_comm_device(), copy=True)
        dist.broadcast(buf, src=src)
        with torch.no_grad():
            t.copy_(buf.to(t.device))


def shard_bounds(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Rows [lo, hi) of rank r out of n: contiguous, sizes differ by at most one, in rank order."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return n * r // w, n * (r + 1) // w


def batch_share(n: int) -> tuple[slice, float]:
    """This rank's slice of a global batch of ``n`` samples and its weight w_r = n_r / n (sum_r w_r = 1).

    A batch smaller than the world (a last partial batch) is taken whole by every rank with weight 1 / W:
    the weighted sum of the ranks' (identical) means is again the batch mean, and batch statistics summed
    over ranks are W times the batch's, so their ratios (class means) are unchanged."""
    w = world_size()
    if w == 1:
        return slice(None), 1.0
    if n < w:
        return slice(None), 1.0 / w
    lo, hi = shard_bounds(n)
    return slice(lo, hi), (hi - lo) / n


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (rank order) on every rank; ranks may hold different row counts."""
    if world_size() == 1:
        return local
    dev = _comm_device()
    sizes = torch.zeros(world_size(), dtype=torch.int64, device=dev)
    sizes[rank()] = local.shape[0]
    dist.all_reduce(sizes)
    most = int(sizes.max())
    pad = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=dev)
    pad[: local.shape[0]] = local.to(dev)
    parts = [torch.empty_like(pad) for _ in range(world_size())]
    dist.all_gather(parts, pad)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes.tolist())]).to(local.device)


def sharded_rows(n: int, compute: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """``compute(0, n)``, with the rows split over ranks: each rank computes rows [lo, hi) of its
    shard, then every rank receives all n rows (e.g. image features encoded in parallel)."""
    if world_size() == 1 or n < world_size():  # every shard non-empty, or no sharding
        return compute(0, n)
    lo, hi = shard_bounds(n)
    out = gather_rows(compute(lo, hi))
    if out.shape[0] != n:
        raise DistributedError(f"gathered {out.shape[0]} rows for {n}: the ranks disagree on the data")
    return out


def spread(items: Sequence[int], compute: Callable[[list[int]], Iterator[tuple[int, Any]]]
           ) -> Iterator[tuple[int, Any]]:
    """Yield ``compute(items)``'s ``(item, result)`` pairs in item order on every rank, each item computed
    once: in round j rank r computes item j W + r, then the round's results are exchanged. For the
    shards of a feature-cache build (:attr:`ncprompt.data.cache.FeatureCache.spread`)."""
    items = list(items)
    if world_size() == 1:
        yield from compute(items)
        return
    w, r = world_size(), rank()
    for j in range(0, len(items), w):
        mine = items[j + r : j + r + 1]
        got = list(compute(mine)) if mine else []
        box: list[Any] = [None] * w
        dist.all_gather_object(box, got)
        for part in box:
            yield from part
    dist.barrier()  # reached once the caller has handled (rank 0: written) every item


def attach_cache(cache: Any) -> Any:
    """Make a :class:`~ncprompt.data.cache.FeatureCache` build its missing shards on all ranks (each
    rank encodes every W-th shard) with rank 0 alone writing the store; returns the cache."""
    if world_size() > 1:
        cache.spread = spread
        cache.writes = is_main()
    return cache


def reduce_nc(acc: T) -> T:
    """``acc.reduce_()`` (an :class:`~ncprompt.metrics.neural_collapse.NCAccumulator` fed a row shard on each
    rank) when collectives are on; returns ``acc``."""
    if world_size() > 1:
        acc.reduce_()  # type: ignore[attr-defined]
    return acc


# --- training ---------------------------------------------------------------------------------
def train_mode(auto: str, requested: str | None = None) -> str:
    """How a method trains now: "single" (one process), "ddp" (every rank takes a slice of each
    batch) or "main" (rank 0 trains alone, the others receive the result).

    ``auto`` (default; or $NCPROMPT_DDP) takes the method's own choice (``PromptMethod.ddp_auto``)."""
    if world_size() == 1:
        return "single"
    mode = requested or os.environ.get(MODE_ENV, "auto")
    if mode not in ("auto", "ddp", "main"):
        raise DistributedError(f"{MODE_ENV}={mode!r}: use auto, ddp or main")
    return auto if mode == "auto" else mode


def wrap_ddp(module: nn.Module) -> nn.Module:
    """DistributedDataParallel over ``module``'s trainable parameters; frozen parameters (the
    backbone) and buffers are neither broadcast nor reduced."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ignore = [n for n, p in module.named_parameters() if not p.requires_grad]
    ignore += [n for n, _ in module.named_buffers()]
    DDP._set_params_and_buffers_to_ignore_for_model(module, ignore)
    params = [p for p in module.parameters() if p.requires_grad]
    dev = params[0].device
    ids = [dev] if dev.type == "cuda" else None
    return DDP(module, device_ids=ids, broadcast_buffers=False)  # (torch 2.9 warns it is deprecated; tested)


def run_on_main(fn: Callable[[], T], modules: Sequence[nn.Module | None]) -> T:
    """Run ``fn`` on rank 0 alone (as a single process, with the threads of all local ranks on
    CPU), then give every rank rank 0's ``modules`` state and ``fn``'s result."""
    result: Any = None
    if rank() == 0:
        threads = torch.get_num_threads()
        if _comm_device().type == "cpu":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
            torch.set_num_threads(min(threads * local, os.cpu_count() or 1))
        try:
            with local_only():
                result = fn()
        finally:
            torch.set_num_threads(threads)
    for m in modules:
        broadcast_module_(m)
    return broadcast_object(result)


# --- launching --------------------------------------------------------------------------------
def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


#: the CLI options that describe the launch, not the run (left out of the command torchrun re-executes)
LAUNCH_OPTIONS = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint")


def node_options(nnodes: int, node_rank: int | None = None, endpoint: str | None = None,
                 env: dict[str, str] | None = None) -> list[str]:
    """torchrun's rendezvous options: ``--standalone`` on one node; on ``nnodes`` nodes the static rendezvous
    (``--nnodes``, ``--node_rank``, ``--rdzv_endpoint`` HOST:PORT of node 0, which hosts it). Under ``srun`` the
    node rank defaults to ``SLURM_NODEID`` and the endpoint to ``MASTER_ADDR``:``MASTER_PORT`` (port 29500)."""
    env = os.environ if env is None else env
    if nnodes < 1:
        raise DistributedError(f"--nnodes must be >= 1, got {nnodes}")
    if nnodes == 1:
        if node_rank is not None or endpoint is not None:
            raise DistributedError("--node-rank and --rdzv-endpoint go with --nnodes N (N > 1 nodes)")
        return ["--standalone"]
    if node_rank is None and env.get("SLURM_NODEID", "").isdigit():
        node_rank = int(env["SLURM_NODEID"])
    if node_rank is None or not 0 <= node_rank < nnodes:
        raise DistributedError(f"--nnodes {nnodes}: give this node's --node-rank in 0..{nnodes - 1} (srun sets "
                               f"SLURM_NODEID){'' if node_rank is None else f', got {node_rank}'}")
    if endpoint is None and env.get("MASTER_ADDR"):
        endpoint = f"{env['MASTER_ADDR']}:{env.get('MASTER_PORT', '29500')}"
    host, _, port = (endpoint or "").rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--nnodes {nnodes}: give --rdzv-endpoint HOST:PORT of node 0 (the same on every "
                               f"node; or set MASTER_ADDR), got {endpoint!r}")
    return ["--nnodes", str(nnodes), "--node_rank", str(node_rank), "--rdzv_endpoint", endpoint]


def torchrun_command(nproc: int, argv: Sequence[str], module: str = "ncprompt.cli",
                     nodes: Sequence[str] = ("--standalone",)) -> list[str]:
    """The torchrun line that runs ``python -m module argv`` on ``nproc`` ranks per node (``nodes``: the
    rendezvous options of :func:`node_options`)."""
    if nproc < 1:
        raise DistributedError(f"--nproc must be >= 1, got {nproc}")
    for name in LAUNCH_OPTIONS:
        argv = strip_option(argv, name)
    return [sys.executable, "-m", "torch.distributed.run", *nodes, "--nproc_per_node", str(nproc),
            "-m", module, *argv]


def launch(nproc: int, argv: Sequence[str], module: str = "ncprompt.cli", nodes: Sequence[str] = ("--standalone",)
           ) -> int:
    """Re-execute the CLI under torchrun on ``nproc`` processes (per node); returns torchrun's exit status."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(torchrun_command(nproc, argv, module, nodes), env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- grids ------------------------------------------------------------------------------------
def visible_cuda_devices() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries."""
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [d.strip() for d in env.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def claim_device(counter: Any, devices: Sequence[str], then: Callable[..., None] | None = None,
                 then_args: tuple[Any, ...] = ()) -> None:
    """Grid worker initialiser: the i-th worker started takes device i (mod the count), so with one
    worker per device every run has a GPU of its own; then runs ``then(*then_args)``. Must run before
    CUDA is initialised (spawned workers)."""
    with counter.get_lock():
        i = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
    if then is not None:
        then(*then_args)


def grid_pool_kwargs(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                     devices: Sequence[str] | None = None) -> dict[str, Any]:
    """ProcessPoolExecutor arguments for a grid's workers: ``initializer(*initargs)``, and with several
    CUDA devices spawned workers that first claim one device each (:func:`claim_device`)."""
    devices = visible_cuda_devices() if devices is None else list(devices)
    if len(devices) < 2 or workers < 2:
        return {"initializer": initializer, "initargs": initargs}
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    return {"mp_context": ctx, "initializer": claim_device,
            "initargs": (ctx.Value("i", 0), tuple(devices), initializer, initargs)}
