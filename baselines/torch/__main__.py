"""``python -m baselines.torch``: train or benchmark the PyTorch baselines.

    python -m baselines.torch train --loss full|sampled --device cpu|gpu --train FILE --test FILE --out DIR
                                    [--epochs E] [--threads T] [--seed S] [--preset P] [--set key=value ...]
    python -m baselines.torch bench --loss full|sampled --device cpu|gpu --like delicious-200k|amazon-670k
                                    [--scale S] [--batches N] [--threads T] [--set key=value ...]

The flags, outputs (curve.csv, run.json, model.npz) and the bench JSON are those of ``slide train``
and ``slide bench`` and of ``python -m baselines.tf``: all use :mod:`slide.runner_cli`. Errors are
one line on stderr and a non-zero exit; the configuration, PyTorch's presence and the device are
checked before any data is read or any file is written.
"""

from __future__ import annotations

import argparse
import sys

from slide.adapter import parse_overrides
from slide.runner_cli import add_bench_arguments, add_train_arguments, main_wrapper, run_bench, run_train


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``prog: error: message``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _preset(args):
    return getattr(args, "preset", None) or getattr(args, "like", None)


def _preflight(args) -> None:
    """Fail fast, before data is loaded: unknown --set keys, an unknown preset, no PyTorch, no GPU."""
    from .device import device_for
    from .method import method_class

    cls = method_class(args.loss, args.device)
    cls.resolve_config(_preset(args), parse_overrides(args.overrides))
    device_for(args.device)


def _make(num_features, num_labels, overrides, args):
    from .method import method_class

    cls = method_class(args.loss, args.device)
    return cls.from_config(num_features, num_labels, preset=_preset(args), overrides=overrides,
                           seed=args.seed, threads=args.threads)


def _train(args) -> int:
    _preflight(args)
    return run_train(args, _make)


def _bench(args) -> int:
    _preflight(args)
    return run_bench(args, _make)


def _add_method_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", required=True, choices=("full", "sampled"),
                   help="full softmax or sampled softmax (log-Q corrected, several true labels per point)")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                   help="cpu (default) or gpu: the first CUDA device PyTorch sees; an error when it sees none")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m baselines.torch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(metavar="COMMAND")
    p = sub.add_parser("train", help="train a torch baseline and write curve.csv, run.json, model.npz")
    _add_method_arguments(p)
    add_train_arguments(p)
    p.add_argument("--preset", help="paper preset: delicious-200k or amazon-670k")
    p.set_defaults(func=_train)
    p = sub.add_parser("bench", help="time torch training batches at a paper dataset's shape; print JSON")
    _add_method_arguments(p)
    add_bench_arguments(p)
    p.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    return main_wrapper(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
