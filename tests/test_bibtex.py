"""Real Bibtex files (a read-only copy of ../shared, see conftest.py): counts and statistics."""

from __future__ import annotations

import numpy as np
import pytest

from slide.data import (dataset_stats, fetch, get_dataset, load_split, load_train_test, load_xc,
                        read_split, read_xc)
from slide.data.cache import cache_paths

pytestmark = pytest.mark.usefixtures("isolated_cache")


def listing(d):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in d.iterdir())


@pytest.mark.slow
def test_bibtex_all_data(bibtex_dir):
    ds = read_xc(bibtex_dir / "Bibtex_data.txt")
    st = dataset_stats(ds)
    assert (st["points"], st["features"], st["labels"]) == (7395, 1836, 159)
    assert (st["nnz"], st["label_nnz"]) == (507746, 17762)
    assert round(st["avg_points_per_label"], 2) == 111.71
    assert round(st["avg_labels_per_point"], 2) == 2.40
    assert round(st["avg_features_per_point"], 2) == 68.66
    assert st["labels_used"] == 159 and st["features_used"] == 1836
    assert st["points_without_labels"] == 0
    assert np.all(ds.x_data == 1.0)
    # first record: "48,131 44:1.000000 59:1.000000 ..."
    assert ds.y_indices[:2].tolist() == [48, 131]
    assert ds.x_indices[:2].tolist() == [44, 59]


def test_bibtex_split_column_1(bibtex_dir):
    tr = read_split(bibtex_dir / "bibtex_trSplit.txt", 1, num_records=7395)
    te = read_split(bibtex_dir / "bibtex_tstSplit.txt", 1, num_records=7395)
    assert (len(tr), len(te)) == (4880, 2515)
    assert tr[0] == 2745 - 1 and te[0] == 6979 - 1
    assert np.intersect1d(tr, te).size == 0
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(7395))
    train, test = load_train_test(bibtex_dir / "Bibtex_data.txt", bibtex_dir / "Bibtex_data.txt",
                                  bibtex_dir / "bibtex_trSplit.txt", bibtex_dir / "bibtex_tstSplit.txt",
                                  split_column=1)
    assert (len(train), len(test)) == (4880, 2515)
    assert round(dataset_stats(train)["avg_labels_per_point"], 4) == 2.3943
    assert round(dataset_stats(test)["avg_labels_per_point"], 4) == 2.4167
    other = load_split(bibtex_dir / "Bibtex_data.txt", bibtex_dir / "bibtex_tstSplit.txt", 10)
    assert len(other) == 2515


def test_bibtex_cache_goes_to_user_cache_and_folder_stays_untouched(bibtex_dir, isolated_cache):
    before = listing(bibtex_dir)
    ds = load_xc(bibtex_dir / "Bibtex_data.txt")
    again = load_xc(bibtex_dir / "Bibtex_data.txt")
    assert np.array_equal(ds.x_indices, again.x_indices)
    assert cache_paths(bibtex_dir / "Bibtex_data.txt")[1].is_file()
    assert listing(bibtex_dir) == before


def test_bibtex_registry_entry_verifies_against_real_files(bibtex_dir, tmp_path):
    """The files placed by hand under a data root pass fetch's verification (symlinked, not copied)."""
    spec = get_dataset("bibtex")
    folder = tmp_path / "data" / "raw" / "bibtex" / spec.folder
    folder.mkdir(parents=True)
    for name in spec.file_names:
        (folder / name).symlink_to(bibtex_dir / name)
    res = fetch("bibtex", root=tmp_path / "data", progress=False, url_template="http://127.0.0.1:9/{id}")
    assert res["split_column"] == 1
    assert len(np.load(res["test_order"])) == 2515
