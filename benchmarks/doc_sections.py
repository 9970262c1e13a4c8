"""Marked sections of docs/benchmarks.md: a script rewrites only the text between its own two markers.

A section is ``BEGIN\\n<body>\\nEND``; every byte outside the marked sections (hand-written text, other
scripts' sections) stays as it is. Imports nothing heavy, so the docs can be rewritten (and tested) without torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class SectionError(ValueError):
    """A page whose markers are missing, repeated or out of order."""


def markers(name: str) -> tuple[str, str]:
    """The begin / end markers of section ``name``: ``<!-- name:begin -->``, ``<!-- name:end -->``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with what lies between ``begin`` and ``end`` replaced by ``body`` (one newline after ``begin``,
    one before ``end``); the markers and everything outside them are kept byte for byte."""
    n_begin, n_end = text.count(begin), text.count(end)
    if n_begin == 0 and n_end == 0:
        raise SectionError(f"no {begin} ... {end} section in the page: add the two marker lines where the "
                           "section belongs")
    if n_begin != 1 or n_end != 1:
        raise SectionError(f"{begin} appears {n_begin} times and {end} {n_end} times: keep exactly one of each")
    i, j = text.index(begin) + len(begin), text.index(end)
    if j < i:
        raise SectionError(f"{end} comes before {begin}: put the begin marker first")
    inner = "\n" + body.strip("\n") + "\n" if body.strip("\n") else "\n"
    return text[:i] + inner + text[j:]


def write_sections(path: Path, bodies: dict[str, str]) -> None:
    """Replace the sections ``name -> body`` (markers from :func:`markers`) of the file ``path``, all or none,
    atomically (temporary file, then rename)."""
    text = path.read_text()
    new = text
    for name, body in bodies.items():
        new = replace_section(new, *markers(name), body)
    if new == text:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, path.stat().st_mode & 0o7777)
        with os.fdopen(fd, "w") as f:
            f.write(new)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
