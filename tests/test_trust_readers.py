"""Issue 19 section 5, data readers: layouts and labels that used to give a silently wrong dataset (split
folders read as classes, nested folders flattened, a CSV split column dropped, one class, empty or mixed
labels, case-duplicate class names, ignored options and roots) are refused in one line naming the file,
line or key and the fix; the layouts that make sense (Train/ Test/, " Train" in a CSV) are read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ncprompt.data import DataError, get_dataset


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _classes(root: Path, names: list[str], per: int = 3) -> Path:
    for k, name in enumerate(names):
        for j in range(per):
            _png(root / name / f"{j}.png", 40 * k + j)
    return root


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- image folders ---------------------------------------------------------------------------------

def test_train_and_val_without_test_is_refused_not_read_as_two_classes(tmp_path):
    root = tmp_path / "ds"
    _classes(root / "train", ["cat", "dog"])
    _classes(root / "val", ["cat", "dog"])
    with pytest.raises(DataError, match=r"split folders train, val/ but no test/.*ROOT/train/<class>/") as e:
        get_dataset("folder", root=str(root))
    assert "rename val/ to test/" in _one_line(e)


def test_split_folders_in_any_case_are_the_splits(tmp_path):
    root = tmp_path / "ds"
    _classes(root / "Train", ["cat", "dog"], per=4)
    _classes(root / "Test", ["cat", "dog"], per=2)
    ds = get_dataset("folder", root=str(root))
    assert ds.classnames == ["cat", "dog"]
    assert (len(ds.train), len(ds.test), ds.val) == (8, 4, None)


def test_split_folders_twice_or_mixed_with_class_folders_are_refused(tmp_path):
    twice = tmp_path / "twice"
    for s in ("train", "Train", "test"):
        _classes(twice / s, ["cat", "dog"])
    with pytest.raises(DataError, match=r"has both Train/ and train/.*merge them"):
        get_dataset("folder", root=str(twice))
    mixed = tmp_path / "mixed"
    _classes(mixed, ["train", "cat", "dog"])
    with pytest.raises(DataError, match=r"mixes split folders \(train\) with other folders \(cat, dog\)"):
        get_dataset("folder", root=str(mixed))


def test_nested_class_folders_are_refused_not_flattened(tmp_path):
    root = tmp_path / "ds"
    _classes(root / "animals", ["cat", "dog"])
    _classes(root / "vehicles", ["car", "bus"])
    with pytest.raises(DataError, match=r"animals holds images in its sub-folder cat/.*point --root") as e:
        get_dataset("folder", root=str(root))
    _one_line(e)


def test_hidden_sub_folders_are_not_classes_or_nesting(tmp_path):
    root = _classes(tmp_path / "ds", ["cat", "dog"])
    _png(root / "cat" / ".thumbs" / "t.png")
    _png(root / ".cache" / "x.png")
    assert get_dataset("folder", root=str(root)).classnames == ["cat", "dog"]


def test_one_class_folder_is_refused(tmp_path):
    root = _classes(tmp_path / "ds", ["cat"])
    with pytest.raises(DataError, match=r"has 1 class \(cat/\); a classifier needs at least 2"):
        get_dataset("folder", root=str(root))


@pytest.mark.parametrize("names", [["Red", "red", "blue"], ["red_car", "red car", "bus"]])
def test_folder_class_names_equal_up_to_case_or_underscore_are_refused(tmp_path, names):
    root = _classes(tmp_path / "ds", names)
    with pytest.raises(DataError, match=r"classes .* differ only in letter case, '_' or spaces.*merge them"):
        get_dataset("folder", root=str(root))


# --- CSV files -------------------------------------------------------------------------------------

def _csv(tmp_path: Path, rows: list[str], header: str = "path,label,split") -> str:
    for i in range(4):
        _png(tmp_path / f"{i}.png", 30 * i)
    f = tmp_path / "list.csv"
    f.write_text("\n".join([header, *rows]) + "\n")
    return str(f)


def test_csv_split_column_is_read_in_any_case_and_blanks(tmp_path):
    rows = ["0.png,cat, Train", "1.png,dog,TRAIN", "2.png,cat,test ", "3.png,dog,Test"]
    ds = get_dataset("csv", root=_csv(tmp_path, rows))
    assert (len(ds.train), len(ds.test)) == (2, 2)  # the old reader split the four rows at random instead
    assert sorted(ds.test.parent.paths[i].name for i in ds.test.indices) == ["2.png", "3.png"]


@pytest.mark.parametrize("bad, match", [
    ("3.png,dog,tset", r"line 5: 'tset' in the split column.*train, val or test"),
    ("3.png,dog", r"line 5: no split value in the split column"),
    ("3.png,dog,", r"line 5: no split value in the split column"),
])
def test_csv_unknown_or_missing_split_value_is_refused_naming_the_line(tmp_path, bad, match):
    rows = ["0.png,cat,train", "1.png,dog,train", "2.png,cat,test", bad]
    with pytest.raises(DataError, match=match) as e:
        get_dataset("csv", root=_csv(tmp_path, rows))
    assert "list.csv" in _one_line(e)


def test_csv_one_class_is_refused(tmp_path):
    rows = ["0.png,cat", "1.png,cat", "2.png,cat"]
    with pytest.raises(DataError, match=r"has 1 class \('cat' \(line 2\)\); a classifier needs at least 2"):
        get_dataset("csv", root=_csv(tmp_path, rows, header="path,label"))
    with pytest.raises(DataError, match=r"has 1 class"):
        get_dataset("csv", root=_csv(tmp_path, ["0.png,0", "1.png,0"], header="path,label"))


def test_csv_empty_label_is_refused_naming_the_line(tmp_path):
    rows = ["0.png,cat", "1.png, ", "2.png,dog"]
    with pytest.raises(DataError, match=r"line 3: the label is empty"):
        get_dataset("csv", root=_csv(tmp_path, rows, header="path,label"))


def test_csv_mixed_integer_and_name_labels_are_refused_naming_a_line_of_each(tmp_path):
    rows = ["0.png,cat", "1.png,1", "2.png,dog", "3.png,0"]
    with pytest.raises(DataError, match=r"labels mix numbers \(line 3: '1'\) and class names \(line 2: 'cat'\)"):
        get_dataset("csv", root=_csv(tmp_path, rows, header="path,label"))


def test_csv_case_duplicate_names_are_refused_naming_their_lines(tmp_path):
    rows = ["0.png,red", "1.png,blue", "2.png,Red", "3.png,blue"]
    with pytest.raises(DataError, match=r"classes 'Red' \(line 4\) and 'red' \(line 2\) differ only in letter case"):
        get_dataset("csv", root=_csv(tmp_path, rows, header="path,label"))


# --- options and roots the dataset would ignore --------------------------------------------------------

def test_misspelt_dataset_option_is_refused_naming_the_valid_ones(tmp_path):
    root = _classes(tmp_path / "ds", ["cat", "dog"])
    with pytest.raises(DataError, match=r"data.options.test_fracton: dataset 'folder' has no option 'test_fracton' "
                                        r"\(its options: test_fraction, seed\)"):
        get_dataset("folder", root=str(root), test_fracton=0.5)
    with pytest.raises(DataError, match=r"data.options.test_fraction: True is a boolean"):
        get_dataset("folder", root=str(root), test_fraction=True)
    with pytest.raises(DataError, match=r"dataset 'oxford_pets' has no option 'seed' \(its options: none\)"):
        get_dataset("oxford_pets", root=str(root), seed=1)


def test_root_for_a_dataset_that_reads_none_is_refused(tmp_path):
    import ncprompt.pocket.suite  # noqa: F401  (registers the pocket datasets)

    root = _classes(tmp_path / "ds", ["cat", "dog"])
    with pytest.raises(DataError, match=r"dataset 'emoji_animals' reads no root.*would be ignored"):
        get_dataset("emoji_animals", root=str(root))


def test_grid_spec_may_not_relabel_a_registered_dataset_that_reads_no_root(tmp_path):
    import ncprompt.pocket.suite  # noqa: F401
    from ncprompt.data.specs import parse_dataset_spec

    root = _classes(tmp_path / "ds", ["cat", "dog"])
    with pytest.raises(DataError, match=r"emoji_animals is a registered dataset that reads no root.*"
                                        r"e.g. my_emoji_animals="):
        parse_dataset_spec(f"emoji_animals={root}")
    assert parse_dataset_spec(f"animals={root}").dataset == "folder"
    assert parse_dataset_spec(f"dtd={tmp_path}").dataset == "dtd"  # a loader with a root: that dataset's layout


def test_cli_refuses_a_misspelt_option_before_loading_the_model(tmp_path, capsys):
    from ncprompt.cli import main

    root = _classes(tmp_path / "ds", ["cat", "dog"])
    code = main(["train", "--dataset", "folder", "--root", str(root), "--set", "data.options.tets_fraction=0.5",
                 "--model", "no-such-model", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "data.options.tets_fraction: dataset 'folder' has no option 'tets_fraction'" in err
