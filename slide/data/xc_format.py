"""Strict, fast reader and writer for the Extreme Classification (XC) text format.

Format (Bhatia et al., XC repository)::

    num_points num_features num_labels
    l1,l2,... f1:v1 f2:v2 ...
    ...

Indices are 0-based. The label field may be empty (the line then starts with a
space; a record with neither labels nor features is a line holding one space), CRLF
line ends and trailing blanks are accepted, the last line may lack its newline, and
empty lines after the last declared record are ignored (files often end with an extra
CRLF). Leading zeros of an index are accepted (``007`` is 7). Everything else is an
error: :func:`read_xc` raises
:class:`~slide.errors.DatasetFormatError` naming the file and the 1-based line
(header = line 1) for a malformed header, a record count that disagrees with the
header, an index out of range or negative, a non-numeric token, a NaN/infinite value
(or one that overflows float32), a feature or label repeated within a line, an empty
file, an empty line where a record should be (it used to be read as an empty record,
silently shifting every later line), a record cut in the middle of a pair (``12:``),
and an input that is not a readable regular file (folder, FIFO, device: said as such).

The parse runs in a Numba kernel over the raw bytes (one counting pass, one fill
pass, no Python work per token); the wrapper only validates and raises. Feature
values are decoded by hand (sign, digits, '.', exponent) into float64 and rounded
once to float32; decimal inputs with at most 15 significant digits give exactly
``np.float32(float(token))``.

:func:`write_xc` writes a dataset back in the same format, atomically, with the
shortest decimal that this reader maps back to the same float32 (``1`` rather than
``1.000000``), so ``read_xc(write_xc(p, ds)) == ds`` bit for bit (-0.0 is written as 0).
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np

from slide.data.dataset import XCDataset
from slide.errors import DatasetFormatError
from slide.io import atomic_path, describe_os_error, not_a_regular_file, read_regular_file
from slide.settings import NJIT

__all__ = ["read_xc", "write_xc", "read_header"]

_INT32_MAX = 2**31 - 1
_MARK_LIMIT = 1 << 26  # dims above this use a per-row sort for the duplicate check

# kernel status codes
OK = 0
E_BAD_LABEL = 1
E_NEG_LABEL = 2
E_LABEL_RANGE = 3
E_DUP_LABEL = 4
E_LABEL_SEP = 5
E_BAD_FEATURE = 6
E_NEG_FEATURE = 7
E_FEATURE_RANGE = 8
E_DUP_FEATURE = 9
E_MISSING_VALUE = 10
E_BAD_VALUE = 11
E_NONFINITE = 12
E_TRUNCATED = 13
E_TOO_MANY = 14
E_BAD_CR = 15
E_FEATURE_IN_LABELS = 16
E_BLANK_LINE = 17

_POW10 = np.array([10.0 ** k for k in range(23)], dtype=np.float64)
_F32_MAX = float(np.finfo(np.float32).max)

_SP, _TAB, _NL, _CR = 32, 9, 10, 13
_COMMA, _COLON, _DOT, _MINUS, _PLUS = 44, 58, 46, 45, 43
_ZERO, _NINE = 48, 57
# digits are appended to a number only while it is below its cap (see _digits):
_INDEX_CAP = 10**10  # an index of 11 significant digits is out of range for any header (< 2**31)
_MANT_CAP = 10**17  # later mantissa digits only move the decimal exponent
_EXP_CAP = 100000  # an exponent this large under- or overflows anyway


@numba.njit(**NJIT, inline="always")
def _scale(mant, exp10):
    """mant * 10**exp10 in float64 (correctly rounded when mant < 2**53, |exp10| <= 22)."""
    x = np.float64(mant)
    if exp10 >= 0:
        if exp10 > 400:
            return np.inf
        while exp10 > 22:
            x *= 1e22
            exp10 -= 22
        return x * _POW10[exp10]
    e = -exp10
    if e > 400:
        return 0.0
    while e > 22:
        x /= 1e22
        e -= 22
    return x / _POW10[e]


@numba.njit(**NJIT)
def _count_kernel(buf, start):
    colons = 0
    commas = 0
    for i in range(start, buf.shape[0]):
        c = buf[i]
        if c == 58:
            colons += 1
        elif c == 44:
            commas += 1
    return colons, commas


@numba.njit(**NJIT)
def _row_has_dup(indices, lo, hi):
    if hi - lo < 2:
        return -1
    tmp = np.sort(indices[lo:hi])
    for k in range(1, tmp.shape[0]):
        if tmp[k] == tmp[k - 1]:
            return tmp[k]
    return -1


# The parser keeps the exact settings of NJIT, not FAST: fastmath would drop -0.0 and the
# exact float32 rounding promised above. The helpers that take the byte buffer are compiled
# without reference counting (``_nrt=False``) and left to LLVM to inline: a Numba-level
# inline="always" makes the caller incref/decref the array on every call, which measured
# twice as slow as the hand-written loops; these helpers allocate nothing.
_SCAN = dict(NJIT, _nrt=False)


@numba.njit(**NJIT, inline="always")
def _blank(c):
    """A space, tab or line end (the characters that may follow a token)."""
    return c == _SP or c == _TAB or c == _NL or c == _CR


@numba.njit(**_SCAN)
def _digits(buf, pos, n, v, cap):
    """Append the decimal digits at ``pos`` to ``v``, each only while ``v < cap`` (so a
    result ``>= cap`` means 'too many digits'; leading zeros leave ``v`` at 0).
    Returns (v, digits appended, end)."""
    kept = 0
    while pos < n:
        c = buf[pos]
        if c < _ZERO or c > _NINE:
            break
        if v < cap:
            v = v * 10 + (c - _ZERO)
            kept += 1
        pos += 1
    return v, kept, pos


@numba.njit(**_SCAN)
def _rest_blank(buf, pos, line):
    """After the last declared record only blank space may follow. Returns (status, line, pos)."""
    n = buf.shape[0]
    while pos < n:
        c = buf[pos]
        if c == _NL:
            line += 1
        elif c != _SP and c != _TAB and c != _CR:
            return E_TOO_MANY, line, pos
        pos += 1
    return OK, line, pos


@numba.njit(**_SCAN)
def _parse_labels(buf, pos, rec, num_labels, y_indices, ny, mark_l, use_marks):
    """The label field at ``pos`` (a digit): comma-separated indices up to a blank.
    Returns (status, pos, ny, value); on an error ``pos`` is where to point."""
    n = buf.shape[0]
    while True:
        v, _, end = _digits(buf, pos, n, 0, _INDEX_CAP)
        if end == pos:
            if pos < n and buf[pos] == _MINUS:
                return E_NEG_LABEL, pos, ny, 0
            return E_LABEL_SEP, pos, ny, 0
        pos = end
        if v >= num_labels:
            return E_LABEL_RANGE, pos - 1, ny, (v if v < _INDEX_CAP else -1)
        if use_marks:
            if mark_l[v] == rec:
                return E_DUP_LABEL, pos - 1, ny, v
            mark_l[v] = rec
        y_indices[ny] = v
        ny += 1
        if pos >= n:
            return OK, pos, ny, 0
        c = buf[pos]
        if c == _COMMA:
            pos += 1
        elif _blank(c):
            return OK, pos, ny, 0
        elif c == _COLON:
            return E_FEATURE_IN_LABELS, pos, ny, 0
        else:
            return E_BAD_LABEL, pos, ny, 0


@numba.njit(**_SCAN)
def _parse_value(buf, pos):
    """A feature value ``[+-]digits[.digits][(e|E)[+-]digits]`` at ``pos``, followed by a
    blank or the end. Returns (status, value as float64 with its sign, end)."""
    n = buf.shape[0]
    neg = False
    if pos < n and (buf[pos] == _MINUS or buf[pos] == _PLUS):
        neg = buf[pos] == _MINUS
        pos += 1
    mant, kept, end = _digits(buf, pos, n, 0, _MANT_CAP)
    ndig = end - pos
    exp10 = ndig - kept  # integer digits beyond the mantissa's precision
    pos = end
    dot = pos < n and buf[pos] == _DOT
    if dot:
        mant, kept, end = _digits(buf, pos + 1, n, mant, _MANT_CAP)
        ndig += end - pos - 1
        exp10 -= kept
        pos = end
    if ndig == 0:
        if pos >= n:
            return E_TRUNCATED, 0.0, pos
        c = buf[pos]
        if dot:
            return E_BAD_VALUE, 0.0, pos
        if _blank(c):
            return E_MISSING_VALUE, 0.0, pos
        cl = c | 32  # lower case
        if cl == 110 or cl == 105:  # 'n' (nan) or 'i' (inf)
            return E_NONFINITE, 0.0, pos
        return E_BAD_VALUE, 0.0, pos
    if pos < n and (buf[pos] == 101 or buf[pos] == 69):  # e / E
        pos += 1
        eneg = False
        if pos < n and (buf[pos] == _MINUS or buf[pos] == _PLUS):
            eneg = buf[pos] == _MINUS
            pos += 1
        ev, _, end = _digits(buf, pos, n, 0, _EXP_CAP)
        if end == pos:
            return (E_TRUNCATED if pos >= n else E_BAD_VALUE), 0.0, pos
        pos = end
        exp10 += -ev if eneg else ev
    if pos < n and not _blank(buf[pos]):
        return E_BAD_VALUE, 0.0, pos
    val = 0.0 if mant == 0 else _scale(mant, exp10)
    # above FLT_MAX it may still round to FLT_MAX; test in float32
    if val > _F32_MAX and np.isinf(np.float32(val)):
        return E_NONFINITE, 0.0, pos
    return OK, (-val if neg else val), pos


@numba.njit(**_SCAN)
def _parse_features(buf, pos, rec, num_features, x_indices, x_data, nx, mark_f, use_marks):
    """The ``index:value`` pairs from ``pos`` through the line end. Returns
    (status, pos, nx, lines ended (0 or 1), value); on an error ``pos`` is where to point."""
    n = buf.shape[0]
    while True:
        while pos < n and (buf[pos] == _SP or buf[pos] == _TAB):
            pos += 1
        if pos >= n:
            return OK, pos, nx, 0, 0
        c = buf[pos]
        if c == _NL:
            return OK, pos + 1, nx, 1, 0
        if c == _CR:
            if pos + 1 < n and buf[pos + 1] == _NL:
                return OK, pos + 2, nx, 1, 0
            if pos + 1 >= n:
                return OK, pos + 1, nx, 0, 0
            return E_BAD_CR, pos, nx, 0, 0
        if c == _MINUS:
            return E_NEG_FEATURE, pos, nx, 0, 0
        if c < _ZERO or c > _NINE:
            return E_BAD_FEATURE, pos, nx, 0, 0
        tok = pos
        v, _, pos = _digits(buf, pos, n, 0, _INDEX_CAP)
        if pos >= n:
            return E_TRUNCATED, tok, nx, 0, 0
        c = buf[pos]
        if c != _COLON:
            return (E_MISSING_VALUE if _blank(c) else E_BAD_FEATURE), tok, nx, 0, 0
        if v >= num_features:
            return E_FEATURE_RANGE, tok, nx, 0, (v if v < _INDEX_CAP else -1)
        status, val, pos = _parse_value(buf, pos + 1)
        if status != OK:
            return status, tok, nx, 0, 0
        if use_marks:
            if mark_f[v] == rec:
                return E_DUP_FEATURE, tok, nx, 0, v
            mark_f[v] = rec
        x_indices[nx] = v
        x_data[nx] = np.float32(val)
        nx += 1


@numba.njit(**NJIT)
def _parse_kernel(buf, start, n_points, num_features, num_labels,
                  x_indptr, x_indices, x_data, y_indptr, y_indices,
                  mark_f, mark_l, use_marks):
    """Fill the CSR arrays. Returns (status, records, line, pos, value)."""
    n = buf.shape[0]
    pos = start
    line = 2
    rec = 0
    nx = 0
    ny = 0
    x_indptr[0] = 0
    y_indptr[0] = 0
    while pos < n:
        if rec == n_points:
            status, line, pos = _rest_blank(buf, pos, line)
            return status, rec, line, pos, 0
        row_x0 = nx
        row_y0 = ny
        c = buf[pos]
        if c >= _ZERO and c <= _NINE:
            status, pos, ny, value = _parse_labels(buf, pos, rec, num_labels, y_indices, ny, mark_l, use_marks)
            if status != OK:
                return status, rec, line, pos, value
        elif c == _MINUS:
            return E_NEG_LABEL, rec, line, pos, 0
        elif c == _NL or (c == _CR and (pos + 1 >= n or buf[pos + 1] == _NL)):
            # an empty line is not a record (an empty record is a line holding a space)
            return E_BLANK_LINE, rec, line, pos, 0
        elif not _blank(c):
            return E_BAD_LABEL, rec, line, pos, 0
        status, pos, nx, ended, value = _parse_features(buf, pos, rec, num_features, x_indices, x_data, nx,
                                                        mark_f, use_marks)
        if status != OK:
            return status, rec, line, pos, value
        if not use_marks:
            d = _row_has_dup(x_indices, row_x0, nx)
            if d >= 0:
                return E_DUP_FEATURE, rec, line, -1, d
            d = _row_has_dup(y_indices, row_y0, ny)
            if d >= 0:
                return E_DUP_LABEL, rec, line, -1, d
        line += ended
        rec += 1
        x_indptr[rec] = nx
        y_indptr[rec] = ny
    return OK, rec, line, pos, 0


# ----------------------------------------------------------------------------- reader


def _read_bytes(path) -> np.ndarray:
    """The whole file; a folder, FIFO, device or unreadable file is one error line."""
    return read_regular_file(path, "data file")


def _parse_header(path, buf):
    """Return (n, num_features, num_labels, body_start)."""
    if buf.shape[0] == 0:
        raise DatasetFormatError(path, 1, "empty file (expected header 'num_points num_features num_labels')")
    head = bytes(buf[: min(buf.shape[0], 4096)])
    nl = head.find(b"\n")
    if nl < 0:
        if buf.shape[0] > 4096:
            raise DatasetFormatError(path, 1, "malformed header (no line end in the first 4096 bytes)")
        first, start = head, buf.shape[0]
    else:
        first, start = head[:nl], nl + 1
    text = first.rstrip(b"\r").decode("ascii", errors="replace")
    parts = text.split()
    shown = text if len(text) <= 60 else text[:57] + "..."
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() for p in parts):
        if not text.strip():
            raise DatasetFormatError(path, 1, "empty header line (expected 'num_points num_features num_labels')")
        raise DatasetFormatError(
            path, 1, f"malformed header {shown!r} (expected 'num_points num_features num_labels')")
    n, f, l = (int(p) for p in parts)
    for what, v in (("num_points", n), ("num_features", f), ("num_labels", l)):
        if v > _INT32_MAX:
            raise DatasetFormatError(path, 1, f"header {what} {v} exceeds {_INT32_MAX}")
    return n, f, l, start


def _token_at(buf, pos) -> str:
    if pos < 0 or pos >= buf.shape[0]:
        if pos >= buf.shape[0] and buf.shape[0] > 0:
            pos = buf.shape[0] - 1
        else:
            return ""
    lo = pos
    while lo > 0 and buf[lo - 1] not in (_SP, _TAB, _NL):
        lo -= 1
    hi = pos
    while hi < buf.shape[0] and buf[hi] not in (_SP, _TAB, _NL, _CR):
        hi += 1
    tok = bytes(buf[lo:hi]).decode("utf-8", errors="replace")
    return tok if len(tok) <= 40 else tok[:37] + "..."


def _int_at(buf, pos) -> int | None:
    """The decimal integer whose digits cover ``buf[pos]`` (leading zeros dropped)."""
    if pos < 0 or pos >= buf.shape[0] or not (_ZERO <= buf[pos] <= _NINE):
        return None
    lo = pos
    while lo > 0 and _ZERO <= buf[lo - 1] <= _NINE:
        lo -= 1
    hi = pos
    while hi < buf.shape[0] and _ZERO <= buf[hi] <= _NINE:
        hi += 1
    return int(bytes(buf[lo:hi]))


def _shown_int(v: int) -> str:
    text = str(v)
    return text if len(text) <= 40 else f"{text[:12]}...({len(text)} digits)"


def _message(code, buf, pos, value, n_points, num_features, num_labels, rec=0):
    tok = _token_at(buf, pos) if pos >= 0 else ""
    if code == E_BAD_LABEL:
        return f"non-numeric label token {tok!r} (labels are comma-separated non-negative integers)"
    if code == E_NEG_LABEL:
        return f"negative label index in {tok!r}"
    if code == E_LABEL_RANGE:
        parsed = value if value >= 0 else _int_at(buf, pos)
        shown = _shown_int(parsed) if parsed is not None else repr(tok)
        return f"label index {shown} out of range [0, {num_labels})"
    if code == E_DUP_LABEL:
        return f"label {value} repeated within the record"
    if code == E_LABEL_SEP:
        return f"empty label between commas or trailing comma in {tok!r}"
    if code == E_FEATURE_IN_LABELS:
        return (f"feature pair {tok!r} where the label field should be "
                "(a record without labels must start with a space)")
    if code == E_BAD_FEATURE:
        return f"malformed feature token {tok!r} (expected index:value)"
    if code == E_NEG_FEATURE:
        return f"negative feature index in {tok!r}"
    if code == E_FEATURE_RANGE:
        parsed = value if value >= 0 else _int_at(buf, pos)
        shown = _shown_int(parsed) if parsed is not None else repr(tok.split(":")[0])
        return f"feature index {shown} out of range [0, {num_features})"
    if code == E_DUP_FEATURE:
        return f"feature index {value} repeated within the record"
    if code == E_MISSING_VALUE:
        return f"feature token {tok!r} has no value (expected index:value)"
    if code == E_BAD_VALUE:
        return f"non-numeric feature value in {tok!r}"
    if code == E_NONFINITE:
        return f"NaN or infinite feature value in {tok!r}"
    if code == E_TRUNCATED:
        return f"truncated record: file ends inside {tok!r}"
    if code == E_TOO_MANY:
        return f"more records than the {n_points} declared in the header"
    if code == E_BAD_CR:
        return "carriage return not followed by a line feed"
    if code == E_BLANK_LINE:
        return (f"empty line where record {rec + 1} of {n_points} should be (a record with "
                "neither labels nor features is a line holding one space)")
    return f"parse error code {code}"


def read_xc(path) -> XCDataset:
    """Parse an XC-format file strictly (no cache). See the module docstring."""
    path = Path(path)
    return parse_xc_bytes(_read_bytes(path), path)


def parse_xc_bytes(buf: np.ndarray, path="<bytes>") -> XCDataset:
    """Parse XC-format content held in a uint8 array (``path`` only names errors)."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    n, nf, nl, start = _parse_header(path, buf)
    colons, commas = _count_kernel(buf, start)
    cap_x = colons
    cap_y = commas + n
    x_indptr = np.empty(n + 1, dtype=np.int64)
    y_indptr = np.empty(n + 1, dtype=np.int64)
    x_indices = np.empty(cap_x, dtype=np.int32)
    x_data = np.empty(cap_x, dtype=np.float32)
    y_indices = np.empty(cap_y, dtype=np.int32)
    use_marks = nf <= _MARK_LIMIT and nl <= _MARK_LIMIT
    mark_f = np.full(nf if use_marks else 1, -1, dtype=np.int32)
    mark_l = np.full(nl if use_marks else 1, -1, dtype=np.int32)
    code, rec, line, pos, value = _parse_kernel(
        buf, start, n, nf, nl, x_indptr, x_indices, x_data, y_indptr, y_indices,
        mark_f, mark_l, use_marks)
    if code != OK:
        raise DatasetFormatError(path, line, _message(code, buf, pos, value, n, nf, nl, rec))
    if rec < n:
        # 'line' is the number of the line after the last record
        raise DatasetFormatError(
            path, line, f"file ends after {rec} records but the header declares {n}")
    nx = int(x_indptr[n])
    ny = int(y_indptr[n])
    if nx != cap_x:
        x_indices = x_indices[:nx].copy()
        x_data = x_data[:nx].copy()
    if ny != cap_y:
        y_indices = y_indices[:ny].copy()
    return XCDataset(x_indptr, x_indices, x_data, y_indptr, y_indices, nf, nl)


def read_header(path):
    """(num_points, num_features, num_labels) from the first line of an XC file."""
    path = Path(path)
    problem = not_a_regular_file(path, "data file")
    if problem:
        raise DatasetFormatError(path, None, problem)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise DatasetFormatError(path, None, describe_os_error(path, exc)) from None
    n, f, l, _ = _parse_header(path, np.frombuffer(head, dtype=np.uint8))
    return n, f, l


# ----------------------------------------------------------------------------- writer
#
# A value is written as (m, q, kind): the decimal m * 10**q with m free of trailing
# zeros, in one of three forms, each exactly what the reader decodes back:
#   _PLAIN     an integer, m then q zeros ("1", "1000"); the reader sees m * 10**q as
#              one mantissa, so it is used only while that has at most 15 digits;
#   _POINT     digits around a decimal point ("2.5", "0.0001"), for q < 0 while at
#              most 5 zeros follow the point;
#   _EXPONENT  m, 'e', q ("25e-8", "123e20") for the rest.
_PLAIN, _POINT, _EXPONENT = 0, 1, 2


@numba.njit(**NJIT, inline="always")
def _num_digits(m):
    """Number of decimal digits of ``m`` > 0."""
    nd = 0
    while m > 0:
        nd += 1
        m //= 10
    return nd


@numba.njit(**NJIT, inline="always")
def _form_and_read_back(m, q, nd):
    """The form (m, q) with ``nd`` digits is written in, and the float64 the reader makes of it."""
    if q >= 0 and nd + q <= 15:
        mm = m
        for _ in range(q):
            mm *= 10
        return _PLAIN, _scale(mm, 0)
    if q < 0 and (nd + q > 0 or -(nd + q) <= 5):
        return _POINT, _scale(m, q)
    return _EXPONENT, _scale(m, q)


@numba.njit(**NJIT, inline="always")
def _shortest_repr(x, av):
    """(m, q, form) for float64 ``x`` > 0 holding the float32 ``av``: the fewest significant
    digits (1..17) whose written form the reader maps back to ``av``."""
    e10 = int(np.floor(np.log10(x)))
    m = np.int64(0)
    q = 0
    kind = _PLAIN
    for p in range(1, 18):
        q = e10 - p + 1
        if q >= 0:
            r = x / _scale(1, q)
        else:
            r = x * _scale(1, -q)
        m = np.int64(np.floor(r + 0.5))
        if m <= 0:
            continue
        while m % 10 == 0:  # strip trailing zeros
            m //= 10
            q += 1
        kind, back = _form_and_read_back(m, q, _num_digits(m))
        if np.float32(back) == av:
            break
    return m, q, kind


@numba.njit(**NJIT, inline="always")
def _split_digits(m, digits):
    """Decimal digits of ``m`` > 0 into ``digits``, least significant first. Returns their count."""
    nd = 0
    while m > 0:
        digits[nd] = m % 10
        nd += 1
        m //= 10
    return nd


@numba.njit(**NJIT, inline="always")
def _put_digits(digits, nd, out, o):
    """Write digits[nd-1] .. digits[0] at out[o:]. Returns the new end."""
    for k in range(nd - 1, -1, -1):
        out[o] = _ZERO + digits[k]
        o += 1
    return o


@numba.njit(**NJIT, inline="always")
def _put_zeros(n, out, o):
    """Write ``n`` zero digits at out[o:]. Returns the new end."""
    for _ in range(n):
        out[o] = _ZERO
        o += 1
    return o


@numba.njit(**NJIT, inline="always")
def _put_plain(digits, nd, q, out, o):
    """_PLAIN form: the digits, then ``q`` zeros."""
    return _put_zeros(q, out, _put_digits(digits, nd, out, o))


@numba.njit(**NJIT, inline="always")
def _put_point(digits, nd, q, out, o):
    """_POINT form (q < 0): "0.00ddd" when all digits follow the point, else "dd.ddd"."""
    ip = nd + q  # digits before the point
    if ip <= 0:
        out[o] = _ZERO
        out[o + 1] = _DOT
        return _put_digits(digits, nd, out, _put_zeros(-ip, out, o + 2))
    for k in range(nd - 1, -1, -1):
        if k == nd - 1 - ip:
            out[o] = _DOT
            o += 1
        out[o] = _ZERO + digits[k]
        o += 1
    return o


@numba.njit(**NJIT, inline="always")
def _put_exponent(digits, nd, q, out, o):
    """_EXPONENT form: the digits, 'e', then ``q``."""
    o = _put_digits(digits, nd, out, o)
    out[o] = 101  # 'e'
    return _fmt_int(q, out, o + 1, digits)


@numba.njit(**NJIT, inline="always")
def _fmt_int(v, out, o, digits):
    if v < 0:
        out[o] = _MINUS
        o += 1
        v = -v
    if v == 0:
        out[o] = _ZERO
        return o + 1
    return _put_digits(digits, _split_digits(v, digits), out, o)


@numba.njit(**NJIT)
def _fmt_value(v, out, o, digits):
    """Write float32 ``v`` at out[o:], shortest decimal that _scale maps back to v."""
    if v == 0.0:
        out[o] = _ZERO
        return o + 1
    x = np.float64(v)
    av = v
    if x < 0.0:
        out[o] = _MINUS
        o += 1
        x = -x
        av = -v
    m, q, kind = _shortest_repr(x, av)
    nd = _split_digits(m, digits)
    if kind == _PLAIN:
        return _put_plain(digits, nd, q, out, o)
    if kind == _POINT:
        return _put_point(digits, nd, q, out, o)
    return _put_exponent(digits, nd, q, out, o)


@numba.njit(**NJIT)
def _write_kernel(x_indptr, x_indices, x_data, y_indptr, y_indices, r0, out, crlf):
    """Format rows r0.. into ``out`` while they surely fit. Returns (bytes, next_row)."""
    digits = np.empty(24, dtype=np.int64)
    n = x_indptr.shape[0] - 1
    cap = out.shape[0]
    o = 0
    r = r0
    while r < n:
        xl = x_indptr[r + 1] - x_indptr[r]
        yl = y_indptr[r + 1] - y_indptr[r]
        worst = yl * 12 + xl * 40 + 4
        if o + worst > cap:
            break
        for k in range(y_indptr[r], y_indptr[r + 1]):
            if k > y_indptr[r]:
                out[o] = _COMMA
                o += 1
            o = _fmt_int(np.int64(y_indices[k]), out, o, digits)
        for k in range(x_indptr[r], x_indptr[r + 1]):
            out[o] = _SP
            o += 1
            o = _fmt_int(np.int64(x_indices[k]), out, o, digits)
            out[o] = _COLON
            o += 1
            o = _fmt_value(x_data[k], out, o, digits)
        if xl == 0 and yl == 0:
            out[o] = _SP
            o += 1
        if crlf:
            out[o] = _CR
            o += 1
        out[o] = _NL
        o += 1
        r += 1
    return o, r


def write_xc(path, ds: XCDataset, crlf: bool = False, chunk_bytes: int = 64 << 20) -> Path:
    """Write ``ds`` to ``path`` in XC format, atomically (header + one line per point).

    Values are written with the shortest decimal that :func:`read_xc` maps back to the
    same float32. A point without labels starts with a space; a point with neither
    labels nor features is a line holding one space.
    """
    path = Path(path)
    if not np.all(np.isfinite(ds.x_data)):
        raise ValueError("write_xc: dataset holds NaN or infinite feature values")
    x_indptr = np.ascontiguousarray(ds.x_indptr, dtype=np.int64)
    y_indptr = np.ascontiguousarray(ds.y_indptr, dtype=np.int64)
    x_indices = np.ascontiguousarray(ds.x_indices, dtype=np.int32)
    y_indices = np.ascontiguousarray(ds.y_indices, dtype=np.int32)
    x_data = np.ascontiguousarray(ds.x_data, dtype=np.float32)
    n = len(x_indptr) - 1
    eol = b"\r\n" if crlf else b"\n"
    header = f"{n} {ds.num_features} {ds.num_labels}".encode() + eol
    row_x = np.diff(x_indptr)
    row_y = np.diff(y_indptr)
    worst_row = int((row_y * 12 + row_x * 40 + 4).max()) if n else 0
    buf = np.empty(max(chunk_bytes, worst_row + 1), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            r = 0
            while r < n:
                o, r = _write_kernel(x_indptr, x_indices, x_data, y_indptr, y_indices, r,
                                     buf, crlf)
                fh.write(memoryview(buf[:o]))
    return path
