"""``slide data ...`` subcommands: stats, fetch, synth, prepare, bench, list.

``add_data_parser(subparsers)`` registers them on the top-level ``slide`` parser; each
sets ``func`` to a handler taking the parsed args and returning an exit code. Errors
are raised as :class:`~slide.errors.SlideError` for the top-level CLI to print as one
line. Every command prints one JSON document on stdout.

    slide data stats FILE [--split SPLITFILE --column N] [--no-cache]
    slide data fetch NAME [--root data] [--url-template URL] [--no-progress]
          [--deadline S] [--min-rate B/S] [--rate-window S] [--read-timeout S]
    slide data synth --like NAME --scale S --seed N --out DIR
          -> DIR/train.txt, DIR/test.txt, DIR/synth.json
    slide data prepare --train FILE --test FILE [--train-split F --test-split F
          --split-column 1] [--seed 0] [--out DIR]
          -> <FILE>.cache.npz for train and test (or the user cache when read-only)
             and DIR/test_order.npy (DIR defaults to the test file's folder)
    slide data bench [--like amazon-670k] [--scale 1] [--seed 0] [--dir DIR] [--repeat 2]
    slide data list

``python -m slide.data.commands ...`` runs the same commands without the top-level CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from slide.errors import ConfigError, SlideError
from slide.runs import cpu_model

__all__ = ["add_data_parser", "main"]


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def _rounded(stats: dict, digits: int = 4) -> dict:
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in stats.items()}


# ----------------------------------------------------------------------------- handlers


def cmd_stats(args) -> int:
    from slide.data.cache import load_xc
    from slide.data.splits import read_split
    from slide.data.stats import dataset_stats

    if args.column is not None and args.split is None:
        raise ConfigError("--column needs --split")
    ds = load_xc(args.file, cache=not args.no_cache)
    out = {"file": str(args.file)}
    if args.split is not None:
        column = args.column if args.column is not None else 1
        rows = read_split(args.split, column, num_records=len(ds))
        ds = ds.subset(rows)
        out.update(split=str(args.split), column=column)
    out.update(_rounded(dataset_stats(ds)))
    _print_json(out)
    return 0


def cmd_fetch(args) -> int:
    from slide.data.fetch import DownloadLimits, fetch

    limits = DownloadLimits.resolve(deadline=args.deadline, min_rate=args.min_rate,
                                    rate_window=args.rate_window, read_timeout=args.read_timeout)
    res = fetch(args.name, root=args.root, progress=not args.no_progress,
                url_template=args.url_template, keep_archive=args.keep_archive, limits=limits)
    _print_json(res)
    return 0


def cmd_synth(args) -> int:
    from slide.data.synth import synth_shape, write_synth

    synth_shape(args.like, args.scale)  # validate before any work
    t0 = time.perf_counter()
    res = write_synth(args.out, args.like, args.scale, args.seed)
    res["seconds"] = round(time.perf_counter() - t0, 3)
    _print_json(res)
    return 0


def _parse_or_cached(path: Path):
    """(dataset, cache_file_or_None): an existing valid cache avoids the parse."""
    from slide.data.cache import cache_paths, read_cache
    from slide.data.xc_format import read_xc

    for candidate in cache_paths(path):
        ds = read_cache(candidate, path)
        if ds is not None:
            return ds, candidate
    return read_xc(path), None


def cmd_prepare(args) -> int:
    from slide.data.cache import write_cache
    from slide.data.splits import TEST_ORDER_FILE, read_split, refuse_empty, write_test_order

    train, test = Path(args.train), Path(args.test)
    if (args.train_split is None) != (args.test_split is None):
        raise ConfigError("--train-split and --test-split go together")
    same = train.resolve() == test.resolve()
    if same and args.train_split is None:
        raise ConfigError(f"train and test are the same file ({test}): give --train-split and --test-split")
    # parse and check everything before writing anything
    train_ds, train_cache = _parse_or_cached(train)
    if same:
        test_ds, test_cache = train_ds, train_cache
    else:
        test_ds, test_cache = _parse_or_cached(test)
    if (test_ds.num_features, test_ds.num_labels) != (train_ds.num_features, train_ds.num_labels):
        from slide.errors import DatasetFormatError
        raise DatasetFormatError(
            test, 1, f"header declares {test_ds.num_features} features and {test_ds.num_labels} labels "
                     f"but {train} declares {train_ds.num_features} and {train_ds.num_labels}")
    n_train, n_test = len(train_ds), len(test_ds)
    if args.train_split is not None:
        n_train = len(read_split(args.train_split, args.split_column, num_records=len(train_ds)))
        n_test = len(read_split(args.test_split, args.split_column, num_records=len(test_ds)))
    refuse_empty("train", n_train, args.train_split or train)
    refuse_empty("test", n_test, args.test_split or test)
    out_dir = Path(args.out) if args.out is not None else test.parent
    order_path = out_dir / TEST_ORDER_FILE
    if args.out is None and not _writable_dir(out_dir):
        raise ConfigError(f"{out_dir} is read-only; give --out DIR for {TEST_ORDER_FILE}")
    # now write: caches, then the test order
    if train_cache is None:
        train_cache = write_cache(train, train_ds)
    if not same and test_cache is None:
        test_cache = write_cache(test, test_ds)
    elif same:
        test_cache = train_cache
    write_test_order(order_path, n_test, args.seed)
    _print_json({
        "train": str(train), "test": str(test),
        "train_cache": str(train_cache) if train_cache else None,
        "test_cache": str(test_cache) if test_cache else None,
        "test_order": str(order_path), "seed": args.seed,
        "train_points": n_train, "test_points": n_test,
    })
    return 0


def _writable_dir(d: Path) -> bool:
    from slide.data.cache import _dir_writable

    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return _dir_writable(probe)


def cmd_bench(args) -> int:
    import numba

    from slide.data.cache import read_cache, write_cache
    from slide.data.synth import SYNTH_TRAIN_FILE, bench_dir, ensure_synth, synth_shape
    from slide.data.xc_format import parse_xc_bytes, read_xc

    synth_shape(args.like, args.scale)
    folder = Path(args.dir) if args.dir else bench_dir(args.like, args.scale, args.seed)
    train = folder / SYNTH_TRAIN_FILE
    result = {"like": args.like, "scale": args.scale, "seed": args.seed, "file": str(train)}
    t0 = time.perf_counter()
    written = ensure_synth(folder, args.like, args.scale, args.seed)
    result["synth_seconds"] = round(time.perf_counter() - t0, 2) if written else None
    # warm up (JIT compile or load the compiled kernels) on a tiny input
    parse_xc_bytes(np.frombuffer(b"1 3 2\n0 1:0.5\n", dtype=np.uint8))
    size = train.stat().st_size
    parse_times = []
    ds = None
    for _ in range(args.repeat):
        del ds
        t0 = time.perf_counter()
        ds = read_xc(train)
        parse_times.append(time.perf_counter() - t0)
    cache_file = train.with_name(train.name + ".cache.npz")
    if cache_file.exists():
        cache_file.unlink()
    t0 = time.perf_counter()
    written = write_cache(train, ds)
    cache_write = time.perf_counter() - t0
    nnz, points = ds.nnz, len(ds)
    del ds
    reload_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cached = read_cache(written, train) if written else None
        reload_times.append(time.perf_counter() - t0)
        if cached is None:
            raise SlideError(f"cache {written} could not be read back")
        del cached
    best = min(parse_times)
    result.update({
        "bytes": size, "points": points, "nnz": nnz,
        "parse_seconds": round(best, 3), "parse_MB_per_s": round(size / best / 1e6, 1),
        "parse_seconds_all": [round(t, 3) for t in parse_times],
        "cache_file": str(written) if written else None,
        "cache_bytes": written.stat().st_size if written else None,
        "cache_write_seconds": round(cache_write, 3),
        "cache_reload_seconds": round(min(reload_times), 3),
        "cache_reload_seconds_all": [round(t, 3) for t in reload_times],
        "threads": 1, "numba": numba.__version__, "numpy": np.__version__,
        "cpu": cpu_model(), "cpus_visible": os.cpu_count(),
        "note": "file in the OS page cache (just written or read); MB = 1e6 bytes",
    })
    _print_json(result)
    return 0


def cmd_list(args) -> int:
    from slide.data.registry import load_registry

    reg = load_registry()
    _print_json({name: {"title": s.title, "layout": s.layout, "folder": s.folder,
                        "files": s.files, "stats": s.stats,
                        "download": bool(s.download_ids), "md5": s.md5}
                 for name, s in sorted(reg.items())})
    return 0


# ----------------------------------------------------------------------------- parser


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0):
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v >= 0) or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return v


def _positive_int(text: str) -> int:
    v = _nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return v


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``data`` and its subcommands on ``subparsers`` (from add_subparsers())."""
    data = subparsers.add_parser("data", help="datasets: fetch, synthesise, inspect, prepare, benchmark",
                                 description="Dataset commands (XC format).")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("stats", help="statistics of an XC file (optionally one split) as JSON")
    p.add_argument("file", type=Path)
    p.add_argument("--split", type=Path, help="XC split file (1-based record numbers)")
    p.add_argument("--column", type=_positive_int, help="split column, 1-based (default 1)")
    p.add_argument("--no-cache", action="store_true", help="parse without reading or writing the cache")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("fetch", help="download, verify and cache a registry dataset")
    p.add_argument("name")
    p.add_argument("--root", type=Path, default=Path("data"), help="data root (default: data)")
    p.add_argument("--url-template", default=None,
                   help="download URL with {id} instead of Google Drive (also $SLIDE_DOWNLOAD_URL)")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--deadline", type=_nonneg_float, default=None,
                   help="seconds one download attempt may take, 0 = none "
                        "(default $SLIDE_FETCH_DEADLINE or 7200)")
    p.add_argument("--min-rate", type=_nonneg_float, default=None,
                   help="bytes/s a download must average over every --rate-window, 0 = none "
                        "(default $SLIDE_FETCH_MIN_RATE or 10240)")
    p.add_argument("--rate-window", type=_positive_float, default=None,
                   help="seconds of the throughput window (default $SLIDE_FETCH_RATE_WINDOW or 60)")
    p.add_argument("--read-timeout", type=_positive_float, default=None,
                   help="seconds one read may wait for data (default $SLIDE_FETCH_READ_TIMEOUT or 60)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("synth", help="write a synthetic stand-in: OUT/train.txt, OUT/test.txt, OUT/synth.json")
    p.add_argument("--like", required=True, help="registry dataset to imitate (delicious-200k, amazon-670k)")
    p.add_argument("--scale", type=_positive_float, default=1.0, help="size factor (default 1)")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="build the binary caches and the shuffled test order")
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--train-split", type=Path)
    p.add_argument("--test-split", type=Path)
    p.add_argument("--split-column", type=_positive_int, default=1)
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the test order (default 0)")
    p.add_argument("--out", type=Path, help="folder for test_order.npy (default: the test file's folder)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("bench", help="parse speed and cache reload time on a synthetic file")
    p.add_argument("--like", default="amazon-670k")
    p.add_argument("--scale", type=_positive_float, default=1.0)
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--dir", type=Path, help="where the synthetic files live (default data/bench/<like>-s<scale>-seed<seed>)")
    p.add_argument("--repeat", type=_positive_int, default=2)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("list", help="registered datasets")
    p.set_defaults(func=cmd_list)
    return data


def main(argv=None) -> int:
    """Stand-alone entry (``python -m slide.data.commands``) with the top-level CLI's contract."""
    parser = argparse.ArgumentParser(prog="slide")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    add_data_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SlideError as exc:
        sys.stderr.write(f"slide: error: {' '.join(str(exc).split())}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
