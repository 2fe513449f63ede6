"""The ``slide`` command: ``slide data ...``, ``slide train``, ``slide bench`` and ``slide compare``."""

from __future__ import annotations

import argparse
import sys

from .runner_cli import add_bench_arguments, add_train_arguments, main_wrapper, plain_text, run_bench, run_train


def _make_slide(num_features, num_labels, overrides, args):
    from .engine import SlideMethod
    from .settings import set_threads

    preset = getattr(args, "preset", None) or getattr(args, "like", None)
    return SlideMethod.from_config(num_features, num_labels, preset=preset, overrides=overrides,
                                   seed=args.seed, threads=set_threads(args.threads))


def build_parser() -> argparse.ArgumentParser:
    from .compare import add_compare_parser
    from .data.commands import add_data_parser

    parser = argparse.ArgumentParser(prog="slide", description=plain_text(__doc__))
    sub = parser.add_subparsers(metavar="COMMAND")
    add_data_parser(sub)
    p = sub.add_parser("train", help="train the SLIDE engine and write curve.csv, run.json, model.npz")
    add_train_arguments(p)
    p.add_argument("--preset", help="paper preset: delicious-200k or amazon-670k")
    p.set_defaults(func=lambda a: run_train(a, _make_slide))
    p = sub.add_parser("bench", help="time SLIDE training batches at a paper dataset's shape; print JSON")
    add_bench_arguments(p)
    p.set_defaults(func=lambda a: run_bench(a, _make_slide))
    add_compare_parser(sub)
    return parser


def main(argv=None) -> int:
    return main_wrapper(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
