"""Run folders read for tables and reports: each run's results with its setting, and seeds counted once.

A run's setting (:func:`ncprompt.config.setting.setting_items`) comes from its ``config.yaml``,
``inputs.json`` and ``results.json``; runs are pooled only within one setting, and a seed that two run
folders of one setting hold (a copied or repeated run) is counted once, with a warning that names them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ncprompt.config.setting import describe, differing, setting_id, setting_items, setting_key


def results_files(dirs: list[str | Path]) -> list[Path]:
    """Every results.json under the given folders (a results.json given itself), in path order."""
    out: list[Path] = []
    for d in dirs:
        p = Path(d)
        out += [p] if p.is_file() else sorted(p.rglob("results.json"))
    return out


def read_run_file(f: Path, parse: Any, mapping: bool = True) -> Any:
    """``parse(f's text)``; a file that cannot be read or parsed (or, with ``mapping``, holds no mapping) is a
    :class:`ResultsError` naming ``f`` (and the line, for YAML)."""
    from ncprompt.engine.results import ResultsError

    fix = "rerun that run or move its folder out of the folders given"
    try:
        data = parse(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError, ArithmeticError) as e:
        why = " ".join(str(e).split())[:120]
        raise ResultsError(f"{f} cannot be read ({type(e).__name__}: {why}); {fix}") from None
    except Exception as e:  # noqa: BLE001 - yaml's errors (not imported here) span several lines
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ResultsError(f"{f} cannot be read ({type(e).__name__}{at}); {fix}") from None
    if mapping and not isinstance(data, dict):
        raise ResultsError(f"{f} holds a {type(data).__name__}, not a mapping; {fix}")
    return data


def run_files(results: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(config.yaml, inputs.json) beside ``results`` as dicts, None where absent (or not a mapping); a file that
    cannot be read is a :class:`ResultsError` naming it (:func:`read_run_file`)."""
    import yaml

    out: list[dict[str, Any] | None] = []
    for f, load in ((results.parent / "config.yaml", yaml.safe_load), (results.parent / "inputs.json", json.loads)):
        data = read_run_file(f, load, mapping=False) if f.is_file() else None
        out.append(data if isinstance(data, dict) else None)
    return out[0], out[1]


def run_setting(results: Path, res: dict[str, Any]) -> dict[str, Any]:
    """The setting items of the run whose results.json is ``results`` (read as ``res``)."""
    cfg, inputs = run_files(results)
    return setting_items(cfg, inputs, res)


#: the fields that stand for a setting in rows made by hand (no ``setting`` items)
ROW_FIELDS = ("dataset", "model", "method", "npt", "shots", "tau", "epochs", "options", "protocol")


def row_setting(row: dict[str, Any]) -> dict[str, Any]:
    """A row's setting items; a row made without them is keyed by its :data:`ROW_FIELDS`."""
    s = row.get("setting")
    return s if isinstance(s, dict) else {k: row[k] for k in ROW_FIELDS if row.get(k) not in (None, "")}


#: the results a row of one run folder must repeat to count as the same run read twice (two parts, two inputs)
_RESULT_KEYS = ("base", "new", "hm", "top1", "seconds")


def drop_repeated_seeds(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``rows`` with each (setting, seed) once (the first, in path order), and one warning per repeat.

    A row holds its setting (:func:`row_setting`), ``seed``, and ``run`` (its folder), ``dataset`` and
    ``method`` for the warning; a row without a seed is never taken for a repeat. The same run read twice (one
    folder, equal results: a control listed in two evidence parts) is counted once without a warning."""
    seen: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for i, r in enumerate(rows):
        seed = r.get("seed") if r.get("seed") is not None else ("no seed", i)
        seen.setdefault((setting_key(row_setting(r)), seed), []).append(r)
    warnings = []
    for (_, seed), same in seen.items():
        if len({(str(x.get("run")), *(x.get(k) for k in _RESULT_KEYS)) for x in same}) > 1:
            r = same[0]
            where = ", ".join(str(x.get("run", "?")) for x in same)
            sid = setting_id(row_setting(r))
            warnings.append(f"warning: seed {seed} of {r.get('method')} on {r.get('dataset')} (setting {sid}) is in "
                            f"{len(same)} runs ({where}); counted once ({r.get('run', 'the first')})")
    return [same[0] for same in seen.values()], warnings


def setting_labels(entries: list[tuple[Any, Any, dict[str, Any]]], skip: tuple[str, ...] = ()) -> dict[Any, str]:
    """{id: "crop_min=0.5, flip=False"}: the keys in which each entry's setting differs from the other
    entries of its family (``skip`` left out); ``entries``: (id, family, setting items). Content digests
    are named only where nothing else tells two entries apart."""
    fam: dict[Any, list[tuple[Any, dict[str, Any]]]] = {}
    for i, f, items in entries:
        fam.setdefault(f, []).append((i, items))
    out: dict[Any, str] = {}
    for same in fam.values():
        items = [s for _, s in same]
        keys = differing(items, skip)
        plain = [k for k in keys if not k.startswith("inputs.")]
        if len({describe(s, plain) for s in items}) == len(items):
            keys = plain
        out.update({i: describe(s, keys) for i, s in same})
    return out
