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
    def boom(*args):
        raise AssertionError(f"parsed {args[-1]} although a valid cache exists")
    monkeypatch.setattr(cache_mod, "read_xc", boom)
    monkeypatch.setattr(cache_mod, "parse_xc_bytes", boom)


# ----------------------------------------------------------------------------- cache


def test_cache_written_beside_source_and_used(xc_file, monkeypatch):
    ds = load_xc(xc_file)
    cache_file = xc_file.with_name("d.txt.cache.npz")
    assert cache_file.is_file()
    with np.load(cache_file, allow_pickle=False) as z:
        assert int(z["format_version"]) == cache_mod.FORMAT_VERSION
        assert int(z["source_size"]) == xc_file.stat().st_size
        assert int(z["source_mtime_ns"]) == xc_file.stat().st_mtime_ns
        assert int(z["source_xxh64"]) == cache_mod.xxh64_file(xc_file)
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
                    source_xxh64=np.uint64(cache_mod.xxh64_file(xc_file)),
                    source_path=np.array(str(xc_file)), num_features=np.int64(6), num_labels=np.int64(4),
                    x_indptr=ds.x_indptr, x_indices=ds.x_indices[:-1], x_data=ds.x_data,
                    y_indptr=ds.y_indptr, y_indices=ds.y_indices)
    assert read_cache(cache_file, xc_file) is None


def rewrite_cache(cache_file, **changes):
    """Rewrite a cache keeping its keys (size, mtime, hash) but with some arrays changed."""
    with np.load(cache_file, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    save_npz_atomic(cache_file, **arrays)


def _tampered(ds):
    xi_big = ds.x_indices.copy()
    xi_big[1] = 10**6
    yi_neg = ds.y_indices.copy()
    yi_neg[0] = -3
    xd_nan = ds.x_data.copy()
    xd_nan[2] = np.nan
    xp_down = ds.x_indptr.copy()
    xp_down[1], xp_down[2] = xp_down[2], xp_down[1]
    yp_short = ds.y_indptr.copy()
    yp_short[-1] -= 1
    return {
        "feature index out of range": ({"x_indices": xi_big}, "x_indices outside [0, 6)"),
        "negative label": ({"y_indices": yi_neg}, "y_indices outside [0, 4)"),
        "NaN value": ({"x_data": xd_nan}, "NaN or infinite"),
        "indptr decreasing": ({"x_indptr": xp_down}, "x_indptr decreases"),
        "indptr end": ({"y_indptr": yp_short}, "y_indptr runs from 0 to"),
        "wrong dtype": ({"x_indices": ds.x_indices.astype(np.int64)}, "x_indices is int64"),
        "2-D array": ({"x_data": ds.x_data.reshape(1, -1)}, "x_data is float32 with shape (1, 4)"),
        "labels beyond dims": ({"num_labels": np.int64(2)}, "y_indices outside [0, 2)"),
        "missing array": (None, "unreadable cache"),
    }


@pytest.mark.parametrize("kind", [
    "feature index out of range", "negative label", "NaN value", "indptr decreasing", "indptr end",
    "wrong dtype", "2-D array", "labels beyond dims", "missing array"])
def test_tampered_cache_is_checked_and_reparsed_with_a_warning(xc_file, capsys, kind):
    """Issue 10 item 3: a cache with indices out of range (source size and mtime unchanged)
    was served unchecked and training segfaulted."""
    good = load_xc(xc_file)
    cache_file = xc_file.with_name("d.txt.cache.npz")
    changes, reason = _tampered(good)[kind]
    if changes is None:
        with np.load(cache_file, allow_pickle=False) as z:
            kept = {k: z[k] for k in z.files if k != "y_indices"}
        save_npz_atomic(cache_file, **kept)
    else:
        rewrite_cache(cache_file, **changes)
    capsys.readouterr()
    assert read_cache(cache_file, xc_file) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"slide: warning: {cache_file}: "), err
    assert reason in err[0] and f"parsing {xc_file} instead" in err[0]
    ds = load_xc(xc_file)  # reparsed, never the tampered arrays
    assert same(ds, good)
    assert read_cache(cache_file, xc_file) is not None  # and rewritten
    assert capsys.readouterr().err.count("warning") == 1


def test_same_size_edit_then_touch_r_is_not_served_stale(xc_file, tmp_path):
    """Issue 10 item 3: the cache was keyed on size and mtime only."""
    load_xc(xc_file)
    ref = tmp_path / "ref"
    ref.write_text("x")
    os.utime(ref, ns=(xc_file.stat().st_atime_ns, xc_file.stat().st_mtime_ns))
    xc_file.write_text(TEXT.replace("0:1", "0:7"))  # same size
    os.utime(xc_file, ns=(ref.stat().st_atime_ns, ref.stat().st_mtime_ns))  # touch -r ref
    assert load_xc(xc_file).x_data[2] == 7.0


def test_touch_alone_keeps_the_cache(xc_file, monkeypatch):
    load_xc(xc_file)
    st = xc_file.stat()
    os.utime(xc_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    forbid_parse(monkeypatch)
    assert load_xc(xc_file).x_data[2] == 1.0


def _xxh64_reference(data: bytes, seed: int = 0) -> int:
    """XXH64 in plain Python integers, written from the specification (the test oracle)."""
    M = (1 << 64) - 1
    P1, P2, P3, P4, P5 = (11400714785074694791, 14029467366897019727, 1609587929392839161,
                          9650029242287828579, 2870177450012600261)

    def rotl(x, r):
        return ((x << r) | (x >> (64 - r))) & M

    def rnd(acc, lane):
        return (rotl((acc + lane * P2) & M, 31) * P1) & M

    def u64(i):
        return int.from_bytes(data[i:i + 8], "little")

    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed, (seed - P1) & M]
        while i + 32 <= n:
            v = [rnd(v[k], u64(i + 8 * k)) for k in range(4)]
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M
        for k in range(4):
            h = (((h ^ rnd(0, v[k])) * P1) + P4) & M
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 8 <= n:
        h = ((rotl(h ^ rnd(0, u64(i)), 27) * P1) + P4) & M
        i += 8
    if i + 4 <= n:
        h = ((rotl(h ^ ((int.from_bytes(data[i:i + 4], "little") * P1) & M), 23) * P2) + P3) & M
        i += 4
    while i < n:
        h = (rotl(h ^ ((data[i] * P5) & M), 11) * P1) & M
        i += 1
    h ^= h >> 33
    h = (h * P2) & M
    h ^= h >> 29
    h = (h * P3) & M
    return h ^ (h >> 32)


def test_xxh64_matches_the_specification_streamed_or_not(tmp_path, monkeypatch):
    assert cache_mod.xxh64_bytes(b"") == 0xEF46DB3751D8E999 == _xxh64_reference(b"")
    assert cache_mod.xxh64_bytes(b"abc") == 0x44BC2CF5AD770999 == _xxh64_reference(b"abc")
    monkeypatch.setattr(cache_mod, "_HASH_CHUNK", 64)  # many chunk boundaries
    rng = np.random.default_rng(0)
    for n in [0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 1000, 4099]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        f = tmp_path / f"h{n}"
        f.write_bytes(data)
        expected = _xxh64_reference(data)
        assert cache_mod.xxh64_bytes(data) == expected, n
        assert cache_mod.xxh64_file(f) == expected, n
    try:
        import xxhash
    except ImportError:
        return
    assert cache_mod.xxh64_bytes(data) == xxhash.xxh64_intdigest(data)


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


def test_zero_point_train_or_test_set_is_refused_at_load_time(tmp_path, xc_file):
    """Issue 10 item 15: a 0-point train or test set was accepted and reported as completed."""
    empty = write_split(tmp_path, "0 6 4\n", "empty.txt")
    with pytest.raises(DatasetFormatError) as info:
        load_train_test(xc_file, empty)
    assert str(info.value) == f"{empty}: the test set has 0 points; nothing to evaluate on"
    with pytest.raises(DatasetFormatError) as info:
        load_train_test(empty, xc_file)
    assert str(info.value) == f"{empty}: the train set has 0 points; nothing to train on"
    assert len(read_xc(empty)) == 0  # the file itself is valid XC


def test_split_file_that_is_a_folder_or_fifo_or_unreadable(tmp_path, monkeypatch):
    """Issue 10 items 14/16: say what the split file is; an unreadable one is one line."""
    with pytest.raises(DatasetFormatError, match="is a directory, not a split file"):
        read_split(tmp_path)
    fifo = tmp_path / "split.fifo"
    os.mkfifo(fifo)
    with pytest.raises(DatasetFormatError) as info:
        read_split(fifo)
    assert str(info.value) == f"{fifo}: is a FIFO (named pipe), not a split file"
    p = write_split(tmp_path, "1\n")
    import slide.io as io_mod
    real_open = os.open

    def deny(path, *args, **kwargs):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(io_mod.os, "open", deny)
    with pytest.raises(DatasetFormatError) as info:
        read_split(p)
    assert str(info.value) == f"{p}: permission denied (cannot read it)"


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
