"""Command-line plumbing shared by ``slide train|bench`` and ``python -m baselines.tf train|bench``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .adapter import parse_overrides
from .contention import DISTURBED_NOTE
from .errors import ConfigError

LIKE_CHOICES = ("delicious-200k", "amazon-670k")
THREADS_HELP = ("threads: 0 (default) uses all usable cores; a number above them is lowered to them, "
                "with a warning; negative numbers are refused")


_REST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")
_REST_LITERAL = re.compile(r"``(.+?)``")


def plain_text(text: str | None) -> str | None:
    """Help text without reStructuredText markup: docstrings become parser descriptions, and
    ``--help`` shows ``literal`` as literal and :func:`~a.b.name` as a.b.name."""
    if text is None:
        return None
    return _REST_LITERAL.sub(r"\1", _REST_ROLE.sub(r"\1", text))


def resolve_threads(requested: int) -> int:
    """The thread count a run uses for ``--threads requested`` (see :data:`THREADS_HELP`)."""
    import warnings

    from .errors import ConfigWarning
    from .settings import available_cores

    cores = available_cores()
    if requested < 0:
        raise ConfigError(f"--threads must be >= 0 (0: all {cores} usable cores), got {requested}")
    if requested == 0:
        return cores
    if requested > cores:
        warnings.warn(ConfigWarning(f"--threads {requested}: this process may run on {cores} cores; "
                                    f"using {cores} threads"), stacklevel=2)
        return cores
    return requested


def check_out_dir(out) -> None:
    """Refuse an ``--out`` that is a file, lies below a file, or cannot be written, before any work."""
    from .io import writable_dir_problem

    problem = writable_dir_problem(out)
    if problem:
        raise ConfigError(f"--out {out}: {problem}")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="training data, XC text format")
    p.add_argument("--test", required=True, help="test data, XC text format (may equal --train with splits)")
    p.add_argument("--train-split", help="XC split file selecting the training points of --train")
    p.add_argument("--test-split", help="XC split file selecting the test points of --test")
    p.add_argument("--split-column", type=int, default=1, help="1-based split column (default 1)")
    p.add_argument("--out", required=True, help="run directory for curve.csv, run.json and model.npz")
    p.add_argument("--dataset", help="dataset name recorded in run.json (default: the train file's folder)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs to train, may be fractional (default 1)")
    p.add_argument("--max-steps", type=int, help="stop after this many batches")
    p.add_argument("--max-train-seconds", type=float,
                   help="safety cap: stop once training time reaches this (size runs with --epochs; "
                        "run.json records when the cap cut a run)")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after this many evaluations without a better P@1 (default 0: off)")
    p.add_argument("--eval-points", type=int, default=2560,
                   help="test points in the periodic evaluation sample (default 2560: the reference's 20 batches of 128)")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/model.npz when present")
    p.add_argument("--keep-going", action="store_true",
                   help="exit 0 when the run diverged (it is still recorded as failed in run.json)")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--like", required=True, choices=LIKE_CHOICES, help="paper dataset shape to mimic")
    p.add_argument("--scale", type=float, default=1.0, help="shrink dimensions and counts (default 1: full size)")
    p.add_argument("--batches", type=int, default=20, help="timed batches (default 20)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed batches after compilation (first touches of memory; default 2)")
    p.add_argument("--max-batches", type=int,
                   help="at most this many timed batches while waiting for two table refreshes "
                        "(default 20 x --batches)")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="data", help="where generated benchmark data is cached")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--remeasure-bandwidth", action="store_true", default=None,
                   help="measure the machine's memory bandwidth again instead of reading it from the cache "
                        "(methods that count their bytes, such as SLIDE; also SLIDE_REMEASURE_BANDWIDTH=1)")


def load_training_data(args):
    from .data import load_train_test

    return load_train_test(args.train, args.test, train_split=args.train_split, test_split=args.test_split,
                           split_column=args.split_column)


def run_train(args, make_method) -> int:
    """Load data, build the method with ``make_method(num_features, num_labels, overrides, args)``, train."""
    from .training import check_run_settings, train

    # Everything that needs no data is checked before the data is read.
    check_run_settings(epochs=args.epochs, eval_points=args.eval_points, seed=args.seed, max_steps=args.max_steps,
                       max_train_seconds=args.max_train_seconds, patience=args.patience)
    check_out_dir(args.out)
    args.threads = resolve_threads(args.threads)
    train_data, test_data = load_training_data(args)
    if (train_data.num_features, train_data.num_labels) != (test_data.num_features, test_data.num_labels):
        raise ConfigError(f"{args.test}: dimensions differ from {args.train}")
    method = make_method(train_data.num_features, train_data.num_labels, parse_overrides(args.overrides), args)
    check_run_settings(eval_points=args.eval_points, eval_every=method.eval_every)
    print_settings(method)
    dataset = args.dataset or Path(args.train).resolve().parent.name
    record = train(method, train_data, test_data, args.out, dataset=dataset, epochs=args.epochs,
                   eval_points=args.eval_points, seed=args.seed, max_steps=args.max_steps,
                   max_train_seconds=args.max_train_seconds, patience=args.patience, resume=args.resume)
    if record["status"] != "completed":
        print(f"{sys.argv[0].rsplit('/', 1)[-1]}: run failed: {record['reason']} (recorded in {args.out}/run.json)",
              file=sys.stderr)
        return 0 if args.keep_going else 1
    final = record["final"]
    print(json.dumps({"out": str(args.out), "status": record["status"], "train_seconds": record["train_seconds"],
                      "p_at_1": final["p_at_1"], "p_at_3": final["p_at_3"], "p_at_5": final["p_at_5"]}))
    return 0


def print_settings(method) -> None:
    """One line on stderr with every setting the run uses, so runs compared by hand are comparable."""
    settings = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(method.hyperparameters().items()))
    print(f"{method.name}: threads={method.threads} {settings}", file=sys.stderr, flush=True)


def bench_dataset(like: str, scale: float, seed: int, root="data"):
    """Synthetic training data of the ``like`` shape, generated once and kept under ``root/bench``."""
    from .data import load_xc
    from .data.synth import SYNTH_TRAIN_FILE, bench_dir, ensure_synth

    folder = bench_dir(like, scale, seed, root)
    ensure_synth(folder, like, scale, seed)
    return load_xc(folder / SYNTH_TRAIN_FILE)


def run_bench(args, make_method) -> int:
    from .training import bench

    args.threads = resolve_threads(args.threads)
    data = bench_dataset(args.like, args.scale, args.seed, args.data_root)
    method = make_method(data.num_features, data.num_labels, parse_overrides(args.overrides), args)
    print_settings(method)
    result = bench(method, data, batches=args.batches, warmup=args.warmup, seed=args.seed,
                   max_batches=args.max_batches, remeasure_bandwidth=args.remeasure_bandwidth)
    if result.get("disturbed"):
        print(f"{method.name}: {DISTURBED_NOTE} ({result['disturbed']})", file=sys.stderr)
    result.update(like=args.like, scale=args.scale, features=data.num_features, labels=data.num_labels)
    print(json.dumps(result, indent=2))
    return 0


def _one_line_warnings(prog: str) -> None:
    """Show the suite's own warnings (settings it adjusted) as one line each, without a source line."""
    import warnings

    from .errors import ConfigWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ConfigWarning):
            print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main_wrapper(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse, dispatch to ``args.func``, and turn expected errors into one line on stderr."""
    from .errors import SlideError

    args = parser.parse_args(argv)
    _one_line_warnings(parser.prog)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except SlideError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"{parser.prog}: error: {err.filename}: no such file", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a file-size limit, a read-only file system
        where = f"{err.filename}: " if err.filename else ""
        print(f"{parser.prog}: error: {where}{err.strerror or err} (nothing was half-written)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``prog: error: message``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def baseline_parser(prog: str, description: str, method_class, check_device, *, framework: str,
                    loss_help: str, device_help: str) -> argparse.ArgumentParser:
    """``train`` and ``bench`` for a baseline family chosen by ``--loss`` and ``--device``.

    ``method_class(loss, device)`` returns the adapter class; ``check_device(device)`` raises a
    :class:`~slide.errors.ConfigError` when the device cannot be used. Both, and the ``--set`` keys
    and the preset, are checked before any data is read.
    """

    def preset(args):
        return getattr(args, "preset", None) or getattr(args, "like", None)

    def preflight(args) -> None:
        method_class(args.loss, args.device).resolve_config(preset(args), parse_overrides(args.overrides))
        check_device(args.device)

    def make(num_features, num_labels, overrides, args):
        return method_class(args.loss, args.device).from_config(
            num_features, num_labels, preset=preset(args), overrides=overrides, seed=args.seed, threads=args.threads)

    def train(args) -> int:
        preflight(args)
        return run_train(args, make)

    def bench(args) -> int:
        preflight(args)
        return run_bench(args, make)

    def method_arguments(p):
        from .method_registry import DEVICES, LOSSES

        p.add_argument("--loss", required=True, choices=LOSSES, help=loss_help)
        p.add_argument("--device", default="cpu", choices=DEVICES, help=device_help)

    parser = OneLineParser(prog=prog, description=plain_text(description))
    sub = parser.add_subparsers(metavar="COMMAND")
    p = sub.add_parser("train", help=f"train a {framework} baseline and write curve.csv, run.json, model.npz")
    method_arguments(p)
    add_train_arguments(p)
    p.add_argument("--preset", help="paper preset: delicious-200k or amazon-670k")
    p.set_defaults(func=train)
    p = sub.add_parser("bench", help=f"time {framework} training batches at a paper dataset's shape; print JSON")
    method_arguments(p)
    add_bench_arguments(p)
    p.set_defaults(func=bench)
    return parser

