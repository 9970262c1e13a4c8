"""benchmarks/write_docs.py rewrites only its own marked sections of docs/benchmarks.md (no timing here)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import write_docs  # noqa: E402
from doc_sections import SectionError, markers, replace_section  # noqa: E402

B, E = markers("x")


def test_replace_section_keeps_every_other_byte():
    head = "# Page\r\n\nhand-written, kept\n<!-- bench_cache:begin -->\nother script's\n<!-- bench_cache:end -->\n"
    tail = "\n\ntail without a final newline"
    page = f"{head}{B}\nold line 1\nold line 2\n{E}{tail}"
    body = "new \\1 $0 \\g<0> (regex-looking text stays literal)\n| a | b |"
    out = replace_section(page, B, E, body)
    assert out == f"{head}{B}\n{body}\n{E}{tail}"
    assert replace_section(out, B, E, body) == out  # idempotent
    assert replace_section(out, B, E, "\n\nold line 1\nold line 2\n") == page  # surrounding newlines normalised
    assert replace_section(page, B, E, "") == f"{head}{B}\n{E}{tail}"


@pytest.mark.parametrize("page, match", [
    ("no markers at all\n", "no <!-- x:begin -->"),
    (f"{B}\n{E}\n{B}\n{E}\n", "exactly one of each"),
    (f"{B}\nonly the begin marker\n", "exactly one of each"),
    (f"{E}\nreversed\n{B}\n", "comes before"),
])
def test_bad_markers_are_named(page, match):
    with pytest.raises(SectionError, match=match):
        replace_section(page, B, E, "body")


def _page(stale: str) -> str:
    parts = ["# Benchmarks\n\nintro, hand-written\n"]
    for i, name in enumerate(write_docs.SECTIONS):
        b, e = markers(name)
        parts.append(f"{b}\n{stale}\n{e}\n\nhand-written paragraph {i} *kept*\n")
    parts.append("<!-- bench_methods:begin -->\nanother script's section\n<!-- bench_methods:end -->\n")
    return "\n".join(parts)


def test_write_docs_replaces_only_its_sections(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(BENCH / "results" / "coop_step.json", results)  # npt_cost.json missing: that section says so
    doc = tmp_path / "benchmarks.md"
    doc.write_text(_page("STALE"))
    write_docs.main(doc, results)
    bodies = write_docs.sections(results)
    assert bodies["write_docs:npt"] == write_docs.PENDING and bodies["write_docs:status"] == write_docs.PRELIMINARY
    expected = _page("STALE")
    for name, body in bodies.items():
        expected = replace_section(expected, *markers(name), body)
    assert doc.read_text() == expected and "STALE" not in expected
    assert "| K | steps/epoch |" in bodies["write_docs:coop"]
    write_docs.main(doc, results)  # a second run changes nothing
    assert doc.read_text() == expected


def test_write_docs_refuses_a_page_missing_a_section(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(BENCH / "results" / "coop_step.json", results)
    doc = tmp_path / "benchmarks.md"
    page = _page("STALE").replace(markers("write_docs:npt")[1], "")
    doc.write_text(page)
    with pytest.raises(SystemExit, match="write_docs:npt:begin"):
        write_docs.main(doc, results)
    assert doc.read_text() == page  # all or nothing


def test_the_shipped_page_is_in_sync_with_its_results():
    page = (BENCH.parent / "docs" / "benchmarks.md").read_text()
    out = page
    for name, body in write_docs.sections(BENCH / "results").items():
        out = replace_section(out, *markers(name), body)
    assert out == page, "docs/benchmarks.md is stale: run .venv/bin/python benchmarks/write_docs.py"
