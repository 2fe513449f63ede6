"""Learnability probe: does a method leave label popularity on a stand-in, and how fast per step?

    python workflow/scripts/learnability_probe.py LIKE SCALE STEPS [--method slide|tf-full|tf-sampled]
        [--synth '{"label_zipf": 0.8}'] [--set '{"lr": 0.001}'] [--every N] [--points 1000]

Synthesizes the stand-in in memory (``slide.data.synth.synthesize`` with the generator overrides),
builds the method from its paper preset plus the overrides, trains on seeded epoch permutations and
every ``--every`` steps prints P@1 on the first ``--points`` test points beside the most-frequent-label
P@1 of the whole test set (and, for SLIDE, the fraction of dead hidden units and the active neurons per sample). Learning is
judged by steps, so the figures hold on a busy machine; the seconds printed do not. Used for
reports/benchmarks.md, "Stand-ins in the paper's regime".
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from slide.data.synth import synthesize
from slide.metrics import evaluate_topk, popularity_baseline


def _method(name: str):
    if name == "slide":
        from slide.engine import SlideMethod

        return SlideMethod
    from baselines.tf import method_class

    return method_class(name.split("-")[1], "cpu")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("like")
    p.add_argument("scale", type=float)
    p.add_argument("steps", type=int)
    p.add_argument("--method", default="slide", choices=("slide", "tf-full", "tf-sampled"))
    p.add_argument("--synth", type=json.loads, default={}, help="generator overrides (JSON)")
    p.add_argument("--set", dest="overrides", type=json.loads, default={}, help="method overrides (JSON)")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--points", type=int, default=1000)
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    train, test = synthesize(a.like, a.scale, seed=0, **a.synth)
    rows = np.arange(min(a.points, len(test)))
    pop = popularity_baseline(train, test)["p_at_1"]  # on the whole test set
    m = _method(a.method).from_config(train.num_features, train.num_labels, preset=a.like,
                                      overrides=a.overrides, seed=0, threads=2)
    m.warm_up(train, np.arange(m.batch_size))
    epochs = -(-a.steps * m.batch_size // len(train))
    order = np.concatenate([np.random.default_rng(e).permutation(len(train)) for e in range(epochs)])
    print(f"{a.method} {a.like} x{a.scale}: {train.num_labels} labels, {len(train)} train points, "
          f"popularity P@1 {pop:.3f}, synth {a.synth}, set {a.overrides}", flush=True)
    t0, b = time.perf_counter(), m.batch_size
    for s in range(a.steps):
        loss = m.train_batch(train, order[s * b:(s + 1) * b])
        if (s + 1) % a.every == 0:
            p1 = evaluate_topk(m.predict_topk(test, rows), test, rows)["p_at_1"]
            extra = ""
            if a.method == "slide":
                dead = ((m.hidden(test, rows) > 0).sum(0) == 0).mean()
                extra = f" dead {dead:.2f} active {m.stats()['active_per_sample_mean']:.0f}"
            print(f"step {s + 1} epoch {(s + 1) * b / len(train):.2f} loss {loss:.3f} P@1 {p1:.3f}{extra} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
