"""`ncprompt models` lists the embedded model first; `ncprompt tables` builds paper tables from run folders."""

from __future__ import annotations

from ncprompt.cli import main


def test_models_lists_the_embedded_model_first(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Embedded models") and out[1].split()[0] == "pocket"
    assert "weights here" in out[1]


def test_tables_without_results_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["tables", str(tmp_path), "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # errors go to stderr (issue 19)
    assert len(err) == 1 and "no results.json" in err[0]
