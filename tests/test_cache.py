"""Binary cache, atomic writers, split files and the fixed test order."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import slide.data.cache as cache_mod
from slide.data import (load_split, load_test_order, load_train_test, load_xc, read_split, read_xc,
                        test_order, write_test_order)
from slide.data.cache import cache_paths, read_cache
from slide.errors import ConfigError, DatasetFormatError
from slide.io import atomic_path, atomic_write_bytes, atomic_write_text, save_npz_atomic

pytestmark = pytest.mark.usefixtures("isolated_cache")

TEXT = "3 6 4\n0,2 1:0.5 3:2\n 0:1\n3 5:0.25\n"
FIELDS = ("x_indptr", "x_indices", "x_data", "y_indptr", "y_indices")


def same(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS) and \
        (a.num_features, a.num_labels) == (b.num_features, b.num_labels)


@pytest.fixture
def xc_file(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text(TEXT)
    return p


def forbid_parse(monkeypatch):
    def boom(path):
        raise AssertionError(f"parsed {path} although a valid cache exists")
    monkeypatch.setattr(cache_mod, "read_xc", boom)


# ----------------------------------------------------------------------------- cache


def test_cache_written_beside_source_and_used(xc_file, monkeypatch):
    ds = load_xc(xc_file)
    cache_file = xc_file.with_name("d.txt.cache.npz")
    assert cache_file.is_file()
    with np.load(cache_file, allow_pickle=False) as z:
        assert int(z["format_version"]) == cache_mod.FORMAT_VERSION
        assert int(z["source_size"]) == xc_file.stat().st_size
        assert int(z["source_mtime_ns"]) == xc_file.stat().st_mtime_ns
    assert same(ds, read_xc(xc_file))
    forbid_parse(monkeypatch)
    assert same(load_xc(xc_file), ds)


def test_no_cache_option_writes_nothing(xc_file):
    load_xc(xc_file, cache=False)
    assert sorted(p.name for p in xc_file.parent.iterdir()) == ["d.txt"]


def test_cache_invalidated_when_source_changes(xc_file):
    load_xc(xc_file)
    xc_file.write_text(TEXT.replace("0:1", "0:7"))  # same size, new mtime
    st = xc_file.stat()
    os.utime(xc_file, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    ds = load_xc(xc_file)
    assert ds.x_data[2] == 7.0
    # and the cache now holds the new content
    assert read_cache(xc_file.with_name("d.txt.cache.npz"), xc_file).x_data[2] == 7.0


def test_cache_invalidated_by_format_version(xc_file, monkeypatch):
    load_xc(xc_file)
    monkeypatch.setattr(cache_mod, "FORMAT_VERSION", cache_mod.FORMAT_VERSION + 1)
    assert read_cache(xc_file.with_name("d.txt.cache.npz"), xc_file) is None
    load_xc(xc_file)  # rebuilds
    assert read_cache(xc_file.with_name("d.txt.cache.npz"), xc_file) is not None


def test_corrupt_cache_is_ignored_and_rewritten(xc_file):
    good = load_xc(xc_file)
    cache_file = xc_file.with_name("d.txt.cache.npz")
    cache_file.write_bytes(b"PK\x03\x04 not really a zip")
    assert read_cache(cache_file, xc_file) is None
    assert same(load_xc(xc_file), good)
    assert read_cache(cache_file, xc_file) is not None


def test_inconsistent_cache_arrays_are_rejected(xc_file):
    ds = load_xc(xc_file)
    cache_file = xc_file.with_name("d.txt.cache.npz")
    st = xc_file.stat()
    save_npz_atomic(cache_file, format_version=np.int64(cache_mod.FORMAT_VERSION),
                    source_size=np.int64(st.st_size), source_mtime_ns=np.int64(st.st_mtime_ns),
                    source_path=np.array(str(xc_file)), num_features=np.int64(6), num_labels=np.int64(4),
                    x_indptr=ds.x_indptr, x_indices=ds.x_indices[:-1], x_data=ds.x_data,
                    y_indptr=ds.y_indptr, y_indices=ds.y_indices)
    assert read_cache(cache_file, xc_file) is None


def test_read_only_folder_uses_user_cache(tmp_path, isolated_cache, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    src = ro / "d.txt"
    src.write_text(TEXT)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        ds = load_xc(src)
        assert sorted(p.name for p in ro.iterdir()) == ["d.txt"]
        user = cache_paths(src)[1]
        assert user.parent == isolated_cache / "xc" and user.is_file()
        forbid_parse(monkeypatch)
        assert same(load_xc(src), ds)
    finally:
        ro.chmod(0o755)


def test_parse_errors_surface_through_load_xc(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("2 3 3\n0 1:1\n")
    with pytest.raises(DatasetFormatError) as info:
        load_xc(p)
    assert info.value.line == 3
    assert not (tmp_path / "bad.txt.cache.npz").exists()
    with pytest.raises(DatasetFormatError, match="no such file"):
        load_xc(tmp_path / "absent.txt")


# ----------------------------------------------------------------------------- io helpers


def test_atomic_writers(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_bytes(tmp_path / "c.bin", np.arange(3, dtype=np.int32))
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert np.array_equal(np.fromfile(tmp_path / "c.bin", dtype=np.int32), [0, 1, 2])
    save_npz_atomic(tmp_path / "x.cache.npz", a=np.arange(4))
    save_npz_atomic(tmp_path / "noext", a=np.arange(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin", "noext", "x.cache.npz"]
    with np.load(tmp_path / "noext", allow_pickle=False) as z:
        assert list(z["a"]) == [0, 1]
    with pytest.raises(TypeError):
        save_npz_atomic(tmp_path / "obj.npz", a=np.array([{}], dtype=object))
    assert not (tmp_path / "obj.npz").exists()


def test_atomic_path_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(tmp_path / "sub" / "new.txt") as tmp:
        assert tmp.parent == tmp_path / "sub"
        tmp.write_text("done")
    assert (tmp_path / "sub" / "new.txt").read_text() == "done"
    assert oct((tmp_path / "sub" / "new.txt").stat().st_mode & 0o777) != oct(0o600)


# ----------------------------------------------------------------------------- splits


def write_split(tmp_path, text, name="split.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_split_columns_are_one_based(tmp_path):
    p = write_split(tmp_path, "3 1\n1 2\r\n2 3\n")
    assert read_split(p, 1).tolist() == [2, 0, 1]
    assert read_split(p, 2).tolist() == [0, 1, 2]
    assert read_split(p, 1).dtype == np.int64


@pytest.mark.parametrize("text,column,line,reason", [
    ("", 1, 1, "empty split file"),
    ("1 2\n3\n", 1, 2, "expected 2 columns"),
    ("1 2\n\n3 4\n", 1, 2, "blank line"),
    ("1 2\nx 4\n", 1, 2, "non-numeric"),
    ("1 2\n0 4\n", 1, 2, "not 1-based"),
    ("1 2\n-3 4\n", 1, 2, "non-numeric"),
    ("1 2\n3 4\n1 5\n", 1, 3, "repeated"),
    ("1 2\n", 3, 1, "has 2 columns"),
])
def test_read_split_errors(tmp_path, text, column, line, reason):
    p = write_split(tmp_path, text)
    with pytest.raises(DatasetFormatError) as info:
        read_split(p, column)
    assert info.value.line == line and reason in info.value.reason, str(info.value)


def test_read_split_range_check_and_bad_column(tmp_path):
    p = write_split(tmp_path, "1\n4\n")
    with pytest.raises(DatasetFormatError) as info:
        read_split(p, 1, num_records=3)
    assert info.value.line == 2 and "exceeds the 3 records" in info.value.reason
    with pytest.raises(DatasetFormatError):
        read_split(p, 0)


def test_load_split_and_train_test(tmp_path, xc_file):
    tr = write_split(tmp_path, "3\n1\n", "tr.txt")
    te = write_split(tmp_path, "2\n", "te.txt")
    sub = load_split(xc_file, tr, 1)
    assert len(sub) == 2 and sub.y_indices.tolist() == [3, 0, 2]
    train, test = load_train_test(xc_file, xc_file, tr, te, split_column=1)
    assert len(train) == 2 and len(test) == 1 and test.x_indices.tolist() == [0]
    with pytest.raises(ConfigError):
        load_train_test(xc_file, xc_file)
    other = tmp_path / "other.txt"
    other.write_text("1 7 4\n0 1:1\n")
    with pytest.raises(DatasetFormatError, match="declares 7 features"):
        load_train_test(xc_file, other)
    train, test = load_train_test(xc_file, write_split(tmp_path, TEXT, "t2.txt"))
    assert len(train) == len(test) == 3


# ----------------------------------------------------------------------------- test order


def test_test_order_is_fixed_permutation(tmp_path):
    a = test_order(1000)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, test_order(1000, seed=0))
    assert not np.array_equal(a, test_order(1000, seed=1))
    assert not np.array_equal(a, np.arange(1000))
    p = write_test_order(tmp_path / "test_order.npy", 1000)
    assert np.array_equal(load_test_order(p, 1000), a)
    with pytest.raises(DatasetFormatError, match="1000 entries"):
        load_test_order(p, 999)
    np.save(tmp_path / "bad.npy", np.zeros(3, np.int64))
    with pytest.raises(DatasetFormatError, match="not a permutation"):
        load_test_order(tmp_path / "bad.npy")
