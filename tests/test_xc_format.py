"""XC-format parser and writer: agreement with a slow reference parser, and every error."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from slide.data import XCDataset, read_header, read_xc, write_xc
from slide.errors import DatasetFormatError

pytestmark = pytest.mark.usefixtures("isolated_cache")


# ----------------------------------------------------------------------------- reference


def reference_parse(text: str):
    """Slow, obviously-correct parser for well-formed files (the oracle)."""
    lines = text.replace("\r\n", "\n").split("\n")
    n, nf, nl = (int(t) for t in lines[0].split())
    records = lines[1:1 + n]
    xp, xi, xd, yp, yi = [0], [], [], [0], []
    for line in records:
        if line[:1] in (" ", "\t", ""):
            labels, rest = [], line.split()
        else:
            head, _, tail = line.partition(" ")
            labels, rest = [int(t) for t in head.split(",")], tail.split()
        for tok in rest:
            f, v = tok.split(":")
            xi.append(int(f))
            xd.append(np.float32(float(v)))
        yi.extend(labels)
        xp.append(len(xi))
        yp.append(len(yi))
    return (np.array(xp, np.int64), np.array(xi, np.int32), np.array(xd, np.float32),
            np.array(yp, np.int64), np.array(yi, np.int32), nf, nl)


def _fmt_value(rng, v: float) -> str:
    kind = rng.integers(0, 8)
    if kind == 0:
        return f"{v:.6f}"
    if kind == 1:
        return repr(float(v))
    if kind == 2:
        return f"{v:.4e}"
    if kind == 3:
        return f"{v:.3E}".replace("E-0", "E-").replace("E+0", "E+")
    if kind == 4:
        return str(int(rng.integers(0, 1000)))
    if kind == 5:
        return f"{v:.2f}".lstrip("0") if v >= 0 else f"{v:.2f}"  # ".25"
    if kind == 6:
        return f"{int(rng.integers(0, 50))}."  # "7."
    return f"+{abs(v):.5g}"


def random_xc_text(rng, n=None) -> str:
    n = int(rng.integers(0, 40)) if n is None else n
    nf = int(rng.integers(1, 60))
    nl = int(rng.integers(1, 30))
    eol = "\r\n" if rng.random() < 0.4 else "\n"
    out = [f"{n} {nf} {nl}"]
    for _ in range(n):
        k = int(rng.integers(0, min(nl, 5) + 1))
        labels = rng.choice(nl, size=k, replace=False)
        m = int(rng.integers(0, min(nf, 8) + 1))
        feats = rng.choice(nf, size=m, replace=False)  # file order is kept, unsorted
        vals = rng.standard_normal(m) * 10.0 ** rng.integers(-6, 6, size=m)
        sep = "  " if rng.random() < 0.1 else " "
        pairs = sep.join(f"{f}:{_fmt_value(rng, float(v))}" for f, v in zip(feats, vals))
        line = ",".join(str(l) for l in labels)
        if pairs:
            line += " " + pairs
        elif not labels.size:
            line = " " if rng.random() < 0.5 else "\t"  # an empty line is an error, not a record
        if rng.random() < 0.2:
            line += "  "  # trailing blanks
        out.append(line)
    text = eol.join(out)
    if n == 0 or rng.random() < 0.8:
        text += eol
    return text


def assert_same(ds: XCDataset, ref):
    xp, xi, xd, yp, yi, nf, nl = ref
    np.testing.assert_array_equal(ds.x_indptr, xp)
    np.testing.assert_array_equal(ds.x_indices, xi)
    np.testing.assert_array_equal(ds.x_data, xd)
    np.testing.assert_array_equal(ds.y_indptr, yp)
    np.testing.assert_array_equal(ds.y_indices, yi)
    assert (ds.num_features, ds.num_labels) == (nf, nl)
    assert ds.x_indptr.dtype == np.int64 and ds.y_indptr.dtype == np.int64
    assert ds.x_indices.dtype == np.int32 and ds.y_indices.dtype == np.int32
    assert ds.x_data.dtype == np.float32


def write(tmp_path, text, name="d.txt", binary=False):
    p = tmp_path / name
    p.write_bytes(text if binary else text.encode())
    return p


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_parser_on_random_files(tmp_path, seed):
    rng = np.random.default_rng(seed)
    text = random_xc_text(rng)
    ds = read_xc(write(tmp_path, text))
    assert_same(ds, reference_parse(text))


def test_example_file_with_crlf_empty_labels_exponents(tmp_path):
    text = ("4 10 5\r\n"
            "0,3 1:0.5 7:1.5e2 2:-3E-1\r\n"
            " 4:2\r\n"
            "4   \r\n"
            "1,2 9:.25 0:7. 3:+1e+0")
    ds = read_xc(write(tmp_path, text))
    assert len(ds) == 4
    np.testing.assert_array_equal(ds.x_indices, [1, 7, 2, 4, 9, 0, 3])  # file order kept
    np.testing.assert_array_equal(ds.x_data, np.float32([0.5, 150.0, -0.3, 2.0, 0.25, 7.0, 1.0]))
    np.testing.assert_array_equal(ds.y_indptr, [0, 2, 2, 3, 5])
    np.testing.assert_array_equal(ds.y_indices, [0, 3, 4, 1, 2])
    assert read_header(tmp_path / "d.txt") == (4, 10, 5)


def test_line_holding_a_space_is_a_record_without_labels_or_features(tmp_path):
    ds = read_xc(write(tmp_path, "3 4 4\n1 0:1\n \n 2:3\n"))
    np.testing.assert_array_equal(ds.x_indptr, [0, 1, 1, 2])
    np.testing.assert_array_equal(ds.y_indptr, [0, 1, 1, 1])


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_empty_line_among_records_is_refused(tmp_path, eol):
    """Issue 10 item 15: `3 5 3` with an empty second record used to load as 3 points."""
    text = eol.join(["3 5 3", "0 1:1", "", "1 2:1", "2 3:1", ""])
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, text))
    assert info.value.line == 3
    assert "empty line where record 2 of 3 should be" in info.value.reason
    # too few records followed by an empty line: named the same way
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, "3 5 3\n0 1:1\n1 2:1\n\n", name="short.txt"))
    assert info.value.line == 4 and "record 3 of 3" in info.value.reason


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_trailing_blank_lines_after_last_record_are_fine(tmp_path, eol):
    ds = read_xc(write(tmp_path, f"1 4 4{eol}1 0:1{eol}{eol}  {eol}{eol}"))
    assert len(ds) == 1


def test_index_with_leading_zeros_is_read_by_value(tmp_path):
    """Issue 10 item 16: `000000000001` was refused as out of range and echoed with its zeros."""
    ds = read_xc(write(tmp_path, "1 4 4\n000000000001 00000000000003:1\n"))
    assert ds.y_indices.tolist() == [1] and ds.x_indices.tolist() == [3]
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, "1 4 4\n000000000009 0:1\n", name="l.txt"))
    assert info.value.reason == "label index 9 out of range [0, 4)"
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, "1 4 4\n1 0000000000012:1\n", name="f.txt"))
    assert info.value.reason == "feature index 12 out of range [0, 4)"
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, "1 4 4\n0099999999999999 0:1\n", name="big.txt"))
    assert info.value.reason == "label index 99999999999999 out of range [0, 4)"


@pytest.mark.parametrize("index,ok", [("2147483646", True), ("2147483647", False), ("9999999999", False),
                                      ("10000000000", False), ("0" * 30 + "2147483646", True)])
def test_index_digit_limit_at_the_largest_header(tmp_path, index, ok):
    """Indices of 10 and 11 significant digits around the largest dims a header may declare."""
    top = 2**31 - 1
    shown = index.lstrip("0")
    for field, text in (("label", f"1 {top} {top}\n{index} 0:1\n"), ("feature", f"1 {top} {top}\n0 {index}:1\n")):
        if ok:
            ds = read_xc(write(tmp_path, text, name=f"{field}.txt"))
            got = ds.y_indices if field == "label" else ds.x_indices
            assert got.tolist() == [int(index)]
            continue
        with pytest.raises(DatasetFormatError) as info:
            read_xc(write(tmp_path, text, name=f"{field}.txt"))
        assert info.value.reason == f"{field} index {shown} out of range [0, {top})"
        assert info.value.line == 2 and f"{field}.txt" in str(info.value)


def test_zero_points(tmp_path):
    ds = read_xc(write(tmp_path, "0 5 3\n"))
    assert len(ds) == 0 and ds.num_features == 5 and ds.num_labels == 3


def test_long_mantissas_and_extreme_exponents(tmp_path):
    toks = ["0.1234567890123456789012", "123456789012345678901234567890", "1e-50", "3.4028234e38",
            "1.17549435e-38", "1.4e-45", "0.000000000000000000000000000001", "9" * 30 + "e-30"]
    text = "1 20 1\n0 " + " ".join(f"{i}:{t}" for i, t in enumerate(toks)) + "\n"
    ds = read_xc(write(tmp_path, text))
    expected = np.array([np.float32(float(t)) for t in toks], dtype=np.float32)
    np.testing.assert_allclose(ds.x_data, expected, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------- writer


@pytest.mark.parametrize("seed", range(4))
def test_write_read_roundtrip_bit_exact(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    n, nf, nl = 50, 40, 12
    xp = np.zeros(n + 1, np.int64)
    np.cumsum(rng.integers(0, 8, n), out=xp[1:])
    yp = np.zeros(n + 1, np.int64)
    np.cumsum(rng.integers(0, 4, n), out=yp[1:])
    xi = np.concatenate([rng.choice(nf, xp[i + 1] - xp[i], replace=False) for i in range(n)]).astype(np.int32)
    yi = np.concatenate([rng.choice(nl, yp[i + 1] - yp[i], replace=False) for i in range(n)]).astype(np.int32)
    bits = rng.integers(0, 2**32, size=xp[-1], dtype=np.uint64).astype(np.uint32).view(np.float32)
    mixed = np.where(rng.random(xp[-1]) < 0.5, bits,
                     np.round(rng.random(xp[-1]), 4).astype(np.float32))
    xd = np.where(np.isfinite(mixed), mixed, np.float32(1.5)).astype(np.float32)
    xd[xd == 0] = 0  # -0.0 is written as 0
    ds = XCDataset(xp, xi, xd, yp, yi, nf, nl)
    back = read_xc(write_xc(tmp_path / "w.txt", ds, crlf=bool(seed % 2)))
    for name in ("x_indptr", "x_indices", "x_data", "y_indptr", "y_indices"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    # and Python's float() agrees with our decoding of what we wrote
    text = (tmp_path / "w.txt").read_text()
    assert_same(back, reference_parse(text))


def test_writer_is_compact(tmp_path):
    ds = XCDataset(np.array([0, 3], np.int64), np.array([0, 1, 2], np.int32),
                   np.float32([1.0, 0.1, 2.5e-7]), np.array([0, 2], np.int64),
                   np.array([3, 1], np.int32), 3, 4)
    write_xc(tmp_path / "c.txt", ds)
    assert (tmp_path / "c.txt").read_text() == "1 3 4\n3,1 0:1 1:0.1 2:25e-8\n"


def _written_values(tmp_path, values) -> list[str]:
    """The value tokens write_xc writes for ``values`` (one row, feature i holds values[i])."""
    v = np.asarray(values, dtype=np.float32)
    ds = XCDataset(np.array([0, v.size], np.int64), np.arange(v.size, dtype=np.int32), v,
                   np.array([0, 0], np.int64), np.zeros(0, np.int32), max(v.size, 1), 1)
    line = write_xc(tmp_path / "v.txt", ds).read_text().split("\n")[1]
    return [tok.split(":")[1] for tok in line.split()]


def _reference_layout(token: str) -> str:
    """How the writer lays out the decimal ``token`` denotes, redone in plain Python: as an
    integer while at most 15 digits (m then q zeros), with a point while at most 5 zeros
    follow it, else as digits 'e' exponent."""
    sign, digits, q = Decimal(token).normalize().as_tuple()
    m = "".join(map(str, digits))
    nd = len(m)
    if q >= 0 and nd + q <= 15:
        body = m + "0" * q
    elif q < 0 and (nd + q > 0 or -(nd + q) <= 5):
        ip = nd + q
        body = "0." + "0" * -ip + m if ip <= 0 else m[:ip] + "." + m[ip:]
    else:
        body = f"{m}e{q}"
    return "-" * sign + body


@pytest.mark.parametrize("value, text", [
    # plain integer, trailing zeros written out up to 15 digits
    (7.0, "7"), (1000.0, "1000"), (-500.0, "-500"), (16777216.0, "16777216"),
    (3e10, "30000000000"), (1e14, "100000000000000"), (99999999.0, "100000000"),
    # decimal point: inside the digits, or "0." with up to 5 zeros after it
    (2.5, "2.5"), (123.456, "123.456"), (-12345.678, "-12345.678"), (0.5, "0.5"),
    (0.0001, "0.0001"), (-0.00125, "-0.00125"), (1.5e-5, "0.000015"), (1e-6, "0.000001"),
    # exponent: more than 5 zeros after the point, or more than 15 integer digits
    (1e-7, "1e-7"), (2.5e-7, "25e-8"), (-1e15, "-1e15"), (1e20, "1e20"),
    (3.4028235e38, "34028235e31"), (1.17549435e-38, "11754944e-45"), (1e-45, "1e-45"),
    (0.0, "0"), (-0.0, "0"),
])
def test_writer_forms_exact_text(tmp_path, value, text):
    assert _written_values(tmp_path, [value]) == [text]


def test_writer_shortest_round_trip_in_every_form(tmp_path):
    """Against plain Python over many float32s: float() reads each token back to the same
    float32, it has as few significant digits as NumPy's shortest unique repr, and its
    layout is the one _reference_layout gives; each of the three forms occurs often."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    nice = rng.integers(1, 1000, size=6000) * 10.0 ** rng.integers(-12, 20, size=6000)
    vals = np.concatenate([bits[np.isfinite(bits) & (bits != 0)], nice.astype(np.float32)])
    vals[rng.random(vals.size) < 0.5] *= -1
    forms = {"plain": 0, "point": 0, "exponent": 0}
    for v, tok in zip(vals, _written_values(tmp_path, vals)):
        assert np.float32(float(tok)) == v, (v, tok)
        shortest = np.format_float_scientific(v, unique=True, trim="-").lstrip("-").split("e")[0]
        assert len(Decimal(tok).normalize().as_tuple().digits) == len(shortest.replace(".", "")), (v, tok)
        assert tok == _reference_layout(tok), (v, tok)
        forms["exponent" if "e" in tok else "point" if "." in tok else "plain"] += 1
    assert min(forms.values()) > 1000, forms


def test_writer_rows_without_labels_or_features(tmp_path):
    ds = XCDataset(np.array([0, 1, 1], np.int64), np.array([2], np.int32), np.float32([0.5]),
                   np.array([0, 0, 0], np.int64), np.zeros(0, np.int32), 3, 4)
    write_xc(tmp_path / "e.txt", ds)
    assert (tmp_path / "e.txt").read_text() == "2 3 4\n 2:0.5\n \n"
    back = read_xc(tmp_path / "e.txt")
    np.testing.assert_array_equal(back.x_indptr, [0, 1, 1])


def test_writer_refuses_nan_and_leaves_nothing(tmp_path):
    ds = XCDataset(np.array([0, 1], np.int64), np.array([0], np.int32), np.float32([np.nan]),
                   np.array([0, 0], np.int64), np.zeros(0, np.int32), 1, 1)
    with pytest.raises(ValueError):
        write_xc(tmp_path / "n.txt", ds)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- errors

BAD = [
    # (content, line, words expected in the reason)
    ("", 1, "empty file"),
    ("\n1 0:1\n", 1, "empty header"),
    ("3 4\n", 1, "malformed header"),
    ("3 4 x\n", 1, "malformed header"),
    ("3 4 5 6\n", 1, "malformed header"),
    ("-1 4 5\n", 1, "malformed header"),
    ("99999999999 4 5\n", 1, "exceeds"),
    ("3 4 4\n0 1:1\n1 2:1\n", 4, "file ends after 2 records but the header declares 3"),
    ("1 4 4\n0 1:1\n1 2:1\n", 3, "more records than the 1 declared"),
    ("2 4 4\n0 4:1\n", 2, "feature index 4 out of range [0, 4)"),
    ("2 4 4\n0 1:1\n0 99999999999:1\n", 3, "out of range"),
    ("1 4 4\n4 1:1\n", 2, "label index 4 out of range [0, 4)"),
    ("1 4 4\n0 -1:1\n", 2, "negative feature index"),
    ("1 4 4\n-1 1:1\n", 2, "negative label index"),
    ("1 4 4\n0,-1 1:1\n", 2, "negative label index"),
    ("1 4 4\na 1:1\n", 2, "non-numeric label"),
    ("1 4 4\n0;1 1:1\n", 2, "non-numeric label"),
    ("1 4 4\n0,,1 1:1\n", 2, "empty label between commas"),
    ("1 4 4\n0, 1:1\n", 2, "empty label between commas"),
    ("1 4 4\n1:0.5 2:1\n", 2, "must start with a space"),
    ("1 4 4\n0 x:1\n", 2, "malformed feature token"),
    ("1 4 4\n0 1x:1\n", 2, "malformed feature token"),
    ("1 4 4\n0 1:abc\n", 2, "non-numeric feature value"),
    ("1 4 4\n0 1:1.5x\n", 2, "non-numeric feature value"),
    ("1 4 4\n0 1:1e\n", 2, "non-numeric feature value"),
    ("1 4 4\n0 1:.\n", 2, "non-numeric feature value"),
    ("1 4 4\n0 1:1.0.0\n", 2, "non-numeric feature value"),
    ("1 4 4\n0 1\n", 2, "has no value"),
    ("1 4 4\n0 1: 2:1\n", 2, "has no value"),
    ("1 4 4\n0 1:nan\n", 2, "NaN or infinite"),
    ("1 4 4\n0 1:NaN\n", 2, "NaN or infinite"),
    ("1 4 4\n0 1:inf\n", 2, "NaN or infinite"),
    ("1 4 4\n0 1:-Infinity\n", 2, "NaN or infinite"),
    ("1 4 4\n0 1:1e39\n", 2, "NaN or infinite"),
    ("1 4 4\n0 1:1e999999\n", 2, "NaN or infinite"),
    ("2 4 4\n0 1:1\n0 1:1 2:2 1:3\n", 3, "feature index 1 repeated"),
    ("2 4 4\n0 1:1\n0,2,0 1:1\n", 3, "label 0 repeated"),
    ("1 4 4\n0 12:", 2, "feature index 12 out of range"),
    ("1 20 4\n0 12:", 2, "truncated record"),
    ("1 20 4\n0 12", 2, "truncated record"),
    ("1 20 4\n0 3:1.5e", 2, "truncated record"),
    ("1 20 4\n0 3:-", 2, "truncated record"),
    ("1 4 4\n0 1:1\r2:1\n", 2, "carriage return"),
]


@pytest.mark.parametrize("content,line,reason", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_errors_name_file_and_line(tmp_path, content, line, reason):
    p = write(tmp_path, content)
    with pytest.raises(DatasetFormatError) as info:
        read_xc(p)
    err = info.value
    assert err.line == line, str(err)
    assert reason in err.reason, str(err)
    assert str(err).startswith(f"{p}:{line}: ")
    assert "\n" not in str(err)


def test_duplicates_detected_with_huge_dimensions(tmp_path):
    # dimensions above the marker limit switch to the per-row sort check
    big = 200_000_000
    ok = read_xc(write(tmp_path, f"2 {big} {big}\n5,7 199999999:1 3:2\n 3:1\n"))
    np.testing.assert_array_equal(ok.x_indices, [199999999, 3, 3])
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, f"2 {big} {big}\n5 3:1\n1 4:1 3:2 4:3\n", name="b.txt"))
    assert info.value.line == 3 and "feature index 4 repeated" in info.value.reason
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, f"1 {big} {big}\n5,1,5 3:1", name="c.txt"))
    assert info.value.line == 2 and "label 5 repeated" in info.value.reason


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such file"):
        read_xc(tmp_path / "absent.txt")
    with pytest.raises(DatasetFormatError, match="directory"):
        read_xc(tmp_path)


def test_fifo_and_folder_say_what_they_are_through_every_reader(tmp_path):
    """Issue 10 item 16: a folder or FIFO given as a data file said "no such file" (load_xc)."""
    import os

    from slide.data import load_xc, read_split

    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    for reader in (read_xc, load_xc, read_header):
        with pytest.raises(DatasetFormatError) as info:  # and does not hang on the FIFO
            reader(fifo)
        assert str(info.value) == f"{fifo}: is a FIFO (named pipe), not a data file"
        with pytest.raises(DatasetFormatError) as info:
            reader(tmp_path)
        assert str(info.value) == f"{tmp_path}: is a directory, not a data file"
    with pytest.raises(DatasetFormatError, match="is a FIFO"):
        read_split(fifo)
    link = tmp_path / "dangling.txt"
    link.symlink_to(tmp_path / "gone.txt")
    with pytest.raises(DatasetFormatError, match="broken symbolic link"):
        load_xc(link)


def test_unreadable_file_is_one_error_line(tmp_path, monkeypatch):
    """Issue 10 item 14: an unreadable data file gave a PermissionError traceback."""
    import os

    import slide.io as io_mod
    from slide.data import load_xc

    p = write(tmp_path, "1 4 4\n1 0:1\n")
    if os.geteuid() != 0:
        p.chmod(0)
    else:  # root reads anything: make the open fail as it would for a user
        real_open = os.open

        def deny(path, *args, **kwargs):
            if str(path) == str(p):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(io_mod.os, "open", deny)
    for reader in (read_xc, load_xc):
        with pytest.raises(DatasetFormatError) as info:
            reader(p)
        assert str(info.value) == f"{p}: permission denied (cannot read it)"


def test_error_line_numbers_count_crlf_lines(tmp_path):
    text = "3 4 4\r\n0 1:1\r\n 2:1\r\n0 9:1\r\n"
    with pytest.raises(DatasetFormatError) as info:
        read_xc(write(tmp_path, text))
    assert info.value.line == 4
