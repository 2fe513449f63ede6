"""``python -m baselines.tf``: train or benchmark the TensorFlow baselines.

    python -m baselines.tf train --loss full|sampled --device cpu|gpu --train FILE --test FILE --out DIR
                                 [--epochs E] [--threads T] [--seed S] [--preset P] [--set key=value ...]
    python -m baselines.tf bench --loss full|sampled --device cpu|gpu --like delicious-200k|amazon-670k
                                 [--scale S] [--batches N] [--threads T] [--set key=value ...]

The flags, outputs (curve.csv, run.json, model.npz) and the bench JSON are those of ``slide train``
and ``slide bench``: both commands use :mod:`slide.runner_cli`. Errors are one line on stderr and a
non-zero exit; the configuration and the device are checked before any data is read or any file is
written.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from slide.runner_cli import baseline_parser, main_wrapper  # noqa: E402


def _method_class(loss, device):
    from .method import method_class

    return method_class(loss, device)


def _check_device(device) -> None:
    from .device import device_name

    device_name(device)


def build_parser():
    return baseline_parser("python -m baselines.tf", __doc__.split("\n\n")[0], _method_class, _check_device,
                           framework="TF", loss_help="full softmax or tf.nn.sampled_softmax_loss",
                           device_help="cpu (default) or gpu: the first GPU TensorFlow sees; an error when it sees none")


def main(argv=None) -> int:
    return main_wrapper(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
