"""Run folders read for tables and reports: each run's results with its setting, and seeds counted once.

A run's setting (:func:`ncprompt.config.setting.setting_items`) comes from its ``config.yaml``,
``inputs.json`` and ``results.json``; runs are pooled only within one setting, and a seed that two run
folders of one setting hold (a copied or repeated run) is counted once, with a warning that names them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ncprompt.config.setting import setting_id, setting_items, setting_key


def results_files(dirs: list[str | Path]) -> list[Path]:
    """Every results.json under the given folders (a results.json given itself), in path order."""
    out: list[Path] = []
    for d in dirs:
        p = Path(d)
        out += [p] if p.is_file() else sorted(p.rglob("results.json"))
    return out


def run_files(results: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(config.yaml, inputs.json) beside ``results`` as dicts, None where absent."""
    import yaml

    cfg_file, inputs_file = results.parent / "config.yaml", results.parent / "inputs.json"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None
    inputs = json.loads(inputs_file.read_text()) if inputs_file.is_file() else None
    return (cfg if isinstance(cfg, dict) else None), (inputs if isinstance(inputs, dict) else None)


def run_setting(results: Path, res: dict[str, Any]) -> dict[str, Any]:
    """The setting items of the run whose results.json is ``results`` (read as ``res``)."""
    cfg, inputs = run_files(results)
    return setting_items(cfg, inputs, res)


#: the fields that stand for a setting in rows made by hand (no ``setting`` items)
ROW_FIELDS = ("dataset", "model", "method", "shots", "tau", "epochs", "options", "protocol")


def row_setting(row: dict[str, Any]) -> dict[str, Any]:
    """A row's setting items; a row made without them is keyed by its :data:`ROW_FIELDS`."""
    s = row.get("setting")
    return s if isinstance(s, dict) else {k: row[k] for k in ROW_FIELDS if row.get(k) not in (None, "")}


def drop_repeated_seeds(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``rows`` with each (setting, seed) once (the first, in path order), and one warning per repeat.

    A row holds its setting (:func:`row_setting`), ``seed``, and ``run`` (its folder), ``dataset`` and
    ``method`` for the warning."""
    seen: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        seen.setdefault((setting_key(row_setting(r)), r.get("seed")), []).append(r)
    warnings = []
    for (_, seed), same in seen.items():
        if len(same) > 1:
            r = same[0]
            where = ", ".join(str(x.get("run", "?")) for x in same)
            sid = setting_id(row_setting(r))
            warnings.append(f"warning: seed {seed} of {r.get('method')} on {r.get('dataset')} (setting {sid}) is in "
                            f"{len(same)} runs ({where}); counted once ({r.get('run', 'the first')})")
    return [same[0] for same in seen.values()], warnings
