"""Datasets, sampling and bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest

from ncprompt.data import DataError, get_dataset
from ncprompt.data.sampling import (
    base_new_split,
    class_groups,
    few_shot_indices,
    imbalanced_shots,
    restrict_classes,
    sample_train,
)


def test_fashion_mnist_from_debian_package():
    ds = get_dataset("fashion_mnist")
    assert ds.num_classes == 10 and len(ds.test) == 10_000 and len(ds.train) + len(ds.val) == 60_000
    img, label = ds.test[0]
    assert img.mode == "RGB" and img.size == (28, 28) and 0 <= label < 10


def test_imbalance_profile_matches_formula():
    k, n_max, tau = 10, 16, 0.06
    shots = imbalanced_shots(k, n_max, tau, seed=1)
    ranks = np.random.default_rng(1).permutation(k)
    expected = [max(1, int(np.floor(n_max * tau ** (r / (k - 1)) + 1e-9))) for r in ranks]
    assert shots.tolist() == expected
    assert sorted(shots.tolist())[-1] == 16 and sorted(shots.tolist())[0] == 1
    assert (imbalanced_shots(k, n_max, 1.0, seed=1) == 16).all()


def test_few_shot_sampling_is_seeded_and_per_class():
    labels = np.repeat(np.arange(5), 30)
    a = few_shot_indices(labels, 4, seed=3, num_classes=5)
    b = few_shot_indices(labels, 4, seed=3, num_classes=5)
    c = few_shot_indices(labels, 4, seed=4, num_classes=5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(labels[a]).tolist() == [4] * 5
    with pytest.raises(DataError, match="fewer than the 40 shots"):
        few_shot_indices(labels, 40, seed=0, num_classes=5)


def test_head_middle_tail_groups():
    g = class_groups(np.array([16, 1, 8, 4, 12, 2]))
    assert g["head"].tolist() == [0, 4] and g["middle"].tolist() == [2, 3] and g["tail"].tolist() == [1, 5]


def test_base_new_split_and_relabel(fmnist_small):
    base, new = base_new_split(10)
    assert base.tolist() == [0, 1, 2, 3, 4] and new.tolist() == [5, 6, 7, 8, 9]
    nds = restrict_classes(fmnist_small, new, "new")
    assert nds.classnames == fmnist_small.classnames[5:]
    assert set(nds.test.labels.tolist()) == set(range(5)) and len(nds.test) == 100
    img, lab = nds.test[0]
    assert lab == 0


def test_imbalanced_train_subset(fmnist_small):
    sub, counts = sample_train(fmnist_small.train, 10, 16, 0.25, seed=2)
    assert np.bincount(sub.labels, minlength=10).tolist() == counts.tolist()
    assert counts.max() == 16 and counts.min() == 4


def test_image_folder_and_csv(image_folder, tmp_path):
    ds = get_dataset("folder", root=str(image_folder), test_fraction=0.5)
    assert ds.classnames == ["bag", "sneaker", "trouser"]
    assert len(ds.train) + len(ds.test) == 18
    rows = ["path,label"] + [f"imgs/{c}/{i}.png,{c}" for c in ["bag", "sneaker"] for i in range(6)]
    (tmp_path / "list.csv").write_text("\n".join(rows))
    ds2 = get_dataset("csv", root=str(tmp_path / "list.csv"))
    assert ds2.classnames == ["bag", "sneaker"]
    assert ds2.test[0][0].size == (28, 28)


def test_missing_dataset_root(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--root"):
        get_dataset("folder", root=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        get_dataset("fashion_mnist", root=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="unknown dataset"):
        get_dataset("no_such_dataset")


def test_unreadable_image(image_folder):
    (image_folder / "bag" / "0.png").write_bytes(b"this is not a png")
    ds = get_dataset("folder", root=str(image_folder), test_fraction=0.5)
    with pytest.raises(DataError, match="cannot read image .*0.png.*corrupt"):
        for i in range(len(ds.train)):
            ds.train.load(i)
        for i in range(len(ds.test)):
            ds.test.load(i)


def test_split_folders_with_mismatched_classes(image_folder, tmp_path):
    root = tmp_path / "split"
    (root / "train" / "bag").mkdir(parents=True)
    (root / "test" / "shoe").mkdir(parents=True)
    for d in ("train/bag", "test/shoe"):
        (root / d / "a.png").write_bytes((image_folder / "bag" / "1.png").read_bytes())
    with pytest.raises(DataError, match="class folders must match"):
        get_dataset("folder", root=str(root))


# --- hostile inputs (issue 7): one-line DataError naming the file/line and the fix -----------------

def _csv(tmp_path, labels, name="list.csv", header=True):
    rows = (["path,label"] if header else []) + [f"imgs/bag/{i % 6}.png,{lab}" for i, lab in enumerate(labels)]
    f = tmp_path / name
    f.write_text("\n".join(rows) + "\n")
    return str(f)


@pytest.mark.parametrize("labels, match", [
    (["0", "1", "1.5"], r"line 4: label '1.5' is not an integer"),
    (["0.0", "1.0"], r"line 2: label '0.0' is not an integer"),
    (["0", "2", "3"], r"without gaps.*reach 3 \(no rows for labels \[1\]\).*renumber them 0..2"),
    (["0", str(10**30)], r"reach 1000000000000000000000000000000 \(no rows for labels \[1, 2, 3, 4, 5\]\.\.\.\)"),
    (["0", "-1", "1"], r"line 3: label -1 is negative"),
])
def test_csv_bad_integer_labels(image_folder, tmp_path, labels, match):
    with pytest.raises(DataError, match=match) as e:
        get_dataset("csv", root=_csv(tmp_path, labels))
    assert "\n" not in str(e.value) and "list.csv" in str(e.value)


def test_csv_integer_labels_with_class_names(image_folder, tmp_path):
    ds = get_dataset("csv", root=_csv(tmp_path, ["0", "1"] * 4), classnames=["bag", "shoe"])
    assert ds.classnames == ["bag", "shoe"] and sorted(set(ds.train.labels) | set(ds.test.labels)) == [0, 1]
    with pytest.raises(DataError, match="labels are 0..1 but 3 class names"):
        get_dataset("csv", root=_csv(tmp_path, ["0", "1"] * 4), classnames=["a", "b", "c"])


def test_csv_not_utf8(image_folder, tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("path,label\nimgs/bag/0.png,caf\u00e9\nimgs/bag/1.png,tea\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv is not UTF-8 text \(byte 0xe9.*re-save it with UTF-8"):
        get_dataset("csv", root=str(f))
    f.write_bytes("\ufeffpath,label\nimgs/bag/0.png,caf\u00e9\nimgs/bag/1.png,tea\n".encode())  # UTF-8 with BOM
    assert get_dataset("csv", root=str(f)).classnames == ["caf\u00e9", "tea"]


def test_root_that_is_a_file_or_a_folder(image_folder, tmp_path):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    for name in ("folder", "fashion_mnist", "oxford_pets"):
        with pytest.raises(DataError, match=r"a_file.txt is a file, not a folder; .*(--root|apt-get|pass the folder)"):
            get_dataset(name, root=str(a_file))
    with pytest.raises(DataError, match=r"is a folder, not a file; pass --root to a CSV"):
        get_dataset("csv", root=str(tmp_path))


def test_data_layer_imports_nothing_above_it():
    import subprocess
    import sys

    code = ("import sys, ncprompt.data; print(sorted(m for m in sys.modules if m.startswith('ncprompt.') "
            "and m.split('.')[1] not in ('data', 'registry', 'utils')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
