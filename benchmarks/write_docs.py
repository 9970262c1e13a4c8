"""Rewrites the CoOp-step and NPT-cost sections of docs/benchmarks.md from the JSON in benchmarks/results/.

Run both benchmarks first (coop_step.json, npt_cost.json), then:

    .venv/bin/python benchmarks/write_docs.py

Only the sections between this script's markers (``<!-- write_docs:NAME:begin -->`` ... ``:end -->``, NAME in
``SECTIONS``) are rewritten; the rest of the page (hand-written text, other scripts' sections) stays byte for byte.
Sections whose results file is missing say so, so the page is never filled with stale or invented numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_sections import SectionError, write_sections  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
#: the sections this script owns, in page order
SECTIONS = ("write_docs:status", "write_docs:machine", "write_docs:coop", "write_docs:npt")

PRELIMINARY = """## Status: final numbers still to be taken

The final runs could not be done while this page was written: the 2-core machine was never idle for the
~7 minutes they need (pretraining jobs and test runs took turns), and the benchmark processes were stopped while
a pretraining job ran. The numbers below come from short windows that looked idle. They are indicative only and
are **not** the results:

* ViT-B-16 image encoding: about 6.4 images/s (batch 32, 5.0 s per batch) on 2 threads. So the one-off
  extraction of 1 view of 16 x 100 images takes about 250 s (8 views: about 33 min), and the reference's live
  encoding alone costs about 5 s per step.
* K = 10: floor (text encoder forward + backward, 21 positions) 0.23-0.25 s, cached step 0.24-0.25 s (about
  1.0x the floor).
* K = 100: floor about 1.5-1.9 s; the cached step was about 1.7 s in its only clean sample.
* Op counts from torch.profiler (K = 10): the cached step runs the same ops as the floor plus about 20 small ones
  (PromptLearner.sequences' 2 cats, the logits matmul, cross-entropy, SGD). Timed one by one, these take
  milliseconds next to a step of 0.25-1.7 s.
"""

PENDING = ("*Not measured yet on an idle machine: run the command above while nothing else runs, then "
           "`.venv/bin/python benchmarks/write_docs.py`.*")


def fmt(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def idle_line(info: dict) -> str:
    run = info.get("cpu_during_run", {})
    return (f"pretraining job running at start / end: {info['pretrain_running_at_start']} / "
            f"{info['pretrain_running_at_end']}; other processes took {100 * run.get('others_share', 0):.1f}% of the "
            f"CPUs during the run (load average at start {info['loadavg_at_start'][0]:.2f}); measured {info['date']}")


def coop_findings(coop: dict) -> str:
    lines = ["**Targets** (cached step as measured through `trainer.train`):", ""]
    for k, r in coop["ks"].items():
        need = 20 if int(k) <= 10 else 5
        ok1 = "met" if r["ratio_cached_over_floor"] <= 1.3 else "**missed**"
        ok2 = "met" if r["speedup_reference_over_cached"] >= need else "**missed**"
        lines.append(
            f"* K={k}: cached {fmt(r['cached_step_for_ratios_s'])} vs floor {fmt(r['floor']['median_s'])} = "
            f"{r['ratio_cached_over_floor']:.2f}x (target <= 1.3x: {ok1}; single-step timing "
            f"{r['ratio_single_step_over_floor']:.2f}x); reference {fmt(r['reference']['median_s'])} = "
            f"{r['speedup_reference_over_cached']:.1f}x the cached step (target >= {need}x: {ok2}).")
    return "\n".join(lines)


def npt_findings(npt: dict) -> str:
    base = npt["step_without_npt"]["median_s"]
    return "\n".join(
        f"* {name}: {v['reg_alone']['median_s'] * 1000:.2f} ms forward+backward = "
        f"{100 * v['reg_alone_share']:.2f}% of a {fmt(base)} step." for name, v in npt["variants"].items())


MACHINE = ("* 2 logical CPUs, {cpu} (the model name as `/proc/cpuinfo` gives it: a virtualised Xeon with AVX-512 "
           """and AMX),
  24 GiB RAM, no GPU.
* Python {python}, torch {torch} (CPU, MKL + oneDNN), open_clip {open_clip}; `torch.set_num_threads(2)`.
* ViT-B-16 with **random weights** (`load_backbone("ViT-B-16", device="cpu")`). Timings do not depend on the
  weights, fp32.
* Idle check: each script records whether the project's pretraining job (`pgrep -f ncprompt.pocket.pretrain`) was
  running at its start and end, and how much CPU time other processes took during the run (`/proc/stat` busy
  time minus the benchmark's own CPU time). `--wait-idle S` waits up to S seconds for an idle machine first, and
  stops if the pretraining job is still running.
  * `bench_coop_step.py`: {coop_idle}.
  * `bench_npt_cost.py`: {npt_idle}.""")


def sections(results: Path) -> dict[str, str]:
    """Section name -> generated Markdown, from ``results``/coop_step.json and npt_cost.json (either may be missing)."""
    coop_path, npt_path = results / "coop_step.json", results / "npt_cost.json"
    coop = json.loads(coop_path.read_text()) if coop_path.is_file() else None
    npt = json.loads(npt_path.read_text()) if npt_path.is_file() else None
    m = (coop or npt or {}).get("machine")
    if m is None:
        from _common import machine_info  # imports torch: only when no results file describes the machine

        m = machine_info(2)
    machine = MACHINE.format(cpu=m["cpu"], python=m["python"], torch=m["torch"], open_clip=m["open_clip"],
                             coop_idle=idle_line(coop["machine"]) if coop else "not run yet",
                             npt_idle=idle_line(npt["machine"]) if npt else "not run yet")
    coop_md = coop["markdown"] + "\n\n" + coop_findings(coop) if coop else PENDING
    npt_md = npt["markdown"] + "\n\n" + npt_findings(npt) if npt else PENDING
    bodies = ("" if coop and npt else PRELIMINARY, machine, coop_md, npt_md)
    return dict(zip(SECTIONS, bodies, strict=True))


def main(doc: Path = DOC, results: Path = RESULTS) -> None:
    try:
        write_sections(doc, sections(results))
    except SectionError as e:
        raise SystemExit(f"write_docs: {doc}: {e}") from None
    print(f"written {doc} (sections {', '.join(SECTIONS)})")


if __name__ == "__main__":
    main()
