"""Honest clocks: compilation outside the training clock, contention recorded and judged,
the best P@1 and early stopping, the safety cap, and ``bench``'s rehash-inclusive window."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from slide.contention import MAX_OTHER_CPU_SHARE, ContentionMeter, disturbed_reason
from slide.runs import read_curve
from slide.training import bench, train
from test_training_loop import Popularity, _data

JIT_SECONDS = 0.4


class Compiling(Popularity):
    """Its first training step and first prediction each pay a one-off cost, like a JIT."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.compiled = set()

    def _compile(self, what):
        if what not in self.compiled:
            time.sleep(JIT_SECONDS)
            self.compiled.add(what)

    def train_batch(self, data, rows):
        self._compile("train")
        time.sleep(0.002)
        return super().train_batch(data, rows)

    def predict_topk(self, data, rows, k=5):
        self._compile("predict")
        return super().predict_topk(data, rows, k)


def test_compilation_is_outside_the_training_clock(tmp_path):
    train_data, test_data = _data(95, 0), _data(40, 1)
    record = train(Compiling.from_config(5, 8, threads=1), train_data, test_data, tmp_path, dataset="t",
                   epochs=1, eval_points=16)
    curve = read_curve(tmp_path / "curve.csv")
    first = curve.iloc[0]
    assert record["compile_seconds"] >= 2 * JIT_SECONDS
    # the first evaluation's clock is (steps so far) x (median step), not the one-off cost
    assert first["train_seconds"] < first["step"] * record["median_batch_seconds"] * 3 + 0.05
    assert record["train_seconds"] < JIT_SECONDS
    # the warm-up left no trace: the same counts as a run on an already-compiled method
    again = Compiling.from_config(5, 8, threads=1)
    again.compiled = {"train", "predict"}
    train(again, train_data, test_data, tmp_path / "b", dataset="t", epochs=1, eval_points=16)
    np.testing.assert_array_equal(read_curve(tmp_path / "b" / "curve.csv")["p_at_1"], curve["p_at_1"])
    assert curve["cpu_seconds"].is_monotonic_increasing and (curve["cpu_seconds"] >= 0).all()
    for key in ("load_average_start", "load_average_end", "cpu_utilisation", "other_cpu_share"):
        assert key in record
    assert record["cpu_seconds"] <= record["train_seconds"] + 0.05  # sleeping steps use little CPU


def test_meter_keeps_the_first_load_across_checkpoint_restarts(monkeypatch):
    import slide.contention as c

    loads = iter([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    monkeypatch.setattr(c, "_load", lambda: next(loads))
    meter = ContentionMeter(threads=1).start()
    meter.stop().start()  # a checkpoint in the middle of a run
    figures = meter.stop().figures()
    assert figures["load_average_start"] == [1.0, 1.0, 1.0] and figures["load_average_end"] == [3.0, 3.0, 3.0]


def _hogs(n):
    code = "import time\nt = time.time() + 30\nwhile time.time() < t: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def test_a_busy_machine_is_measured_and_judged_disturbed():
    cores = os.cpu_count() or 1
    hogs = _hogs(min(cores, 4))
    try:
        time.sleep(0.5)  # let them start
        meter = ContentionMeter(threads=1).start()
        time.sleep(1.5)
        figures = meter.stop().figures()
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    expected = min(cores, 4) / cores
    assert figures["other_cpu_share"] >= 0.7 * expected, figures
    assert (figures["disturbed"] is not None) == (figures["other_cpu_share"] > MAX_OTHER_CPU_SHARE)
    assert figures["disturbed"] is not None or cores > 8


def test_disturbed_rule():
    quiet = {"other_cpu_share": 0.02, "load_average_start": [1.1, 0.9, 0.5], "load_average_end": [2.0, 1.2, 0.6],
             "machine": {"cores": 2}}
    assert disturbed_reason(quiet) is None
    assert "45%" in disturbed_reason(dict(quiet, other_cpu_share=0.45))
    # a high load average alone is our own threads or the job before us: recorded, not judged
    assert disturbed_reason(dict(quiet, load_average_start=[3.4, 2.0, 1.0])) is None
    assert disturbed_reason({"machine": {"cores": 2}}) is None  # records from before the figures


class Peaking(Popularity):
    """P@1 rises, then falls: predicts the popular labels first, then the rarest ones."""

    def predict_topk(self, data, rows, k=5):
        order = np.argsort(-self.counts, kind="stable")
        return np.tile(order[:k] if self.step <= 6 else order[::-1][:k], (len(rows), 1))


def test_best_p1_patience_and_safety_cap(tmp_path):
    train_data, test_data = _data(95, 0), _data(40, 1)
    rec = train(Peaking.from_config(5, 8), train_data, test_data, tmp_path / "a", dataset="t", epochs=5,
                eval_points=16)
    assert rec["best"]["step"] <= 6 and rec["best"]["p_at_1"] > rec["final"]["p_at_1"]
    assert not rec["stopped_early"] and rec["steps"] == 50
    early = train(Peaking.from_config(5, 8), train_data, test_data, tmp_path / "b", dataset="t", epochs=5,
                  eval_points=16, patience=2)
    assert early["stopped_early"] and early["steps"] < 50 and early["best"] == rec["best"]
    cut = train(Compiling.from_config(5, 8), train_data, test_data, tmp_path / "c", dataset="t", epochs=50,
                eval_points=16, max_train_seconds=0.05)
    assert cut["max_train_seconds_cut"] and cut["steps"] < 500
    assert read_curve(tmp_path / "c" / "curve.csv")["eval_points"].iloc[-1] == 40  # a full evaluation at the cut
    whole = train(Popularity.from_config(5, 8), train_data, test_data, tmp_path / "d", dataset="t", epochs=1,
                  eval_points=16, max_train_seconds=1e6)
    assert not whole["max_train_seconds_cut"]


def test_resume_drops_curve_rows_after_the_checkpoint(tmp_path):
    train_data, test_data = _data(95, 0), _data(40, 1)
    train(Popularity.from_config(5, 8), train_data, test_data, tmp_path, dataset="t", epochs=2, eval_points=16,
          max_steps=10)
    # a kill after step 10's checkpoint but after later evaluations were written
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    (tmp_path / "curve.csv").write_text("\n".join(curve + [curve[-1].replace("10,", "12,", 1)]) + "\n")
    train(Popularity.from_config(5, 8), train_data, test_data, tmp_path, dataset="t", epochs=2, eval_points=16,
          resume=True)
    steps = read_curve(tmp_path / "curve.csv")["step"].tolist()
    assert steps == sorted(steps) and len(steps) == len(set(steps))


@pytest.mark.slow
def test_bench_window_covers_two_rehashes():
    from slide.engine import SlideMethod
    from slide.engine.grouped import ROW_PHASES

    data = _data(400, 2)
    method = SlideMethod.from_config(5, 8, overrides=dict(hidden=[8], batch_size=10, output_sparsity=0.5, K=2, L=4,
                                                          rehash_every=70, rebuild_every=0), threads=1)
    result = bench(method, data, batches=3, warmup=1)
    assert result["rehashes_in_window"] >= 2 and result["batches"] == 13  # rehashes after batches 7 and 14; one warm-up batch
    assert result["mean_batch_seconds"] > 0 and "disturbed" in result and "compile_seconds" in result
    phases = result["phase_seconds_per_batch"]
    main = {k: v for k, v in phases.items() if not k.startswith("row_")}
    assert set(main) == {"forward_backward", "adam", "rehash"} and min(main.values()) > 0
    assert sum(main.values()) <= result["mean_batch_seconds"]  # timed inside the steps
    assert {k for k in phases if k.startswith("row_")} == {f"row_{p}" for p in ROW_PHASES}
    # the row pass splits its forward_backward by phase: every phase timed, together inside it
    method = SlideMethod.from_config(5, 8, overrides=dict(hidden=[8], batch_size=10, output_sparsity=0.5, K=2, L=4,
                                                          output_pass="row"), threads=1)
    phases = bench(method, data, batches=3, warmup=1)["phase_seconds_per_batch"]
    row = [phases[f"row_{p}"] for p in ROW_PHASES]
    assert min(row) > 0 and sum(row) <= phases["forward_backward"]
    plain = bench(Popularity.from_config(5, 8), data, batches=3, warmup=1)
    assert plain["batches"] == 3 and "rehashes_in_window" not in plain and "rehash_seconds" not in plain


@pytest.mark.slow
def test_slide_on_a_fresh_numba_cache_starts_its_clock_after_compiling(tmp_path):
    """Every kernel compiles in a new, empty cache; none of that may land on the training clock."""
    code = f"""
import json, numpy as np
from slide.data.synth import synthesize
from slide.engine import SlideMethod
from slide.training import train
tr, te = synthesize("amazon-670k", scale=0.002, seed=1)
m = SlideMethod.from_config(tr.num_features, tr.num_labels, preset="amazon-670k",
                            overrides=dict(eval_every=5, lr=1e-3, rehash_every=640), seed=0, threads=2)
rec = train(m, tr, te, {str(tmp_path)!r}, dataset="t", epochs=1, eval_points=64)
print(json.dumps(rec))
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    record = json.loads(proc.stdout.strip().splitlines()[-1])
    first = read_curve(tmp_path / "curve.csv").iloc[0]
    assert record["compile_seconds"] > 1.0  # it did compile
    assert first["train_seconds"] < first["step"] * record["median_batch_seconds"] * 3 + 0.1, (first, record)
    assert record["method_stats"]["rehash_count"] >= 1  # a rehash fell inside the clock, already compiled
