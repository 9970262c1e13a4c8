"""The README's Python code blocks run as written (pocket model, tiny settings), in a scratch folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text."""
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_python_blocks_are_found():
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nls\n```\n") == ["a = 1\n"]
    assert python_blocks(README.read_text()), "the README has no ```python example"


@pytest.mark.parametrize("i", range(len(python_blocks(README.read_text()))))
def test_readme_python_block_runs(i, tmp_path, monkeypatch):
    code = python_blocks(README.read_text())[i]
    assert "/path/to" not in code, "README examples must run as written (no placeholder paths)"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NCPROMPT_CACHE", str(tmp_path / "cache"))
    exec(compile(code, f"README.md python block {i + 1}", "exec"), {"__name__": "__readme__"})
