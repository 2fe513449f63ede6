"""The training and benchmark loops shared by every method: batching, evaluation schedule, timing.

Training time (``train_seconds``) counts only :meth:`Method.train_batch` calls; evaluation is timed
separately and kept off the training-time axis, as in the paper.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import DivergenceError, SlideError
from .metrics import evaluate_topk, popularity_baseline
from .runs import RunRecorder, peak_rss_mb

_DRIVER = "driver__"


def eval_sample(n_test: int, eval_points: int, seed: int) -> np.ndarray:
    """The fixed random sample of test points evaluated during training.

    Official XC test files are sorted by label, so a prefix of them would inflate P@1.
    """
    m = min(int(eval_points), n_test)
    rng = np.random.default_rng([int(seed), 0x5EED])
    return np.sort(rng.choice(n_test, size=m, replace=False)).astype(np.int64)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Shuffled order of the training points in ``epoch`` (a function of seed and epoch, so resumable)."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64)


def evaluate(method, data, rows=None, k: int = 5) -> dict:
    """Rank labels with ``method`` for ``rows`` of ``data`` and score them with the shared metrics."""
    rows = np.arange(len(data), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    return evaluate_topk(method.predict_topk(data, rows, k), data, rows)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def save_checkpoint(method, path, driver: dict) -> None:
    """Write ``model.npz``: the method's arrays plus the loop's position; no pickled objects."""
    from .io import save_npz_atomic

    arrays = dict(method.state_arrays())
    arrays[_DRIVER + "json"] = np.array(json.dumps(driver))
    arrays["model__header"] = np.array(json.dumps(dict(
        num_features=method.num_features, num_labels=method.num_labels, config=method.config,
        seed=method.seed, threads=method.threads)))
    save_npz_atomic(path, **arrays)


def load_checkpoint(method, path) -> dict:
    """Restore ``method`` from ``model.npz`` and return the loop's position.

    The open archive is handed over as a mapping, so arrays are read one at a time into the
    method's buffers instead of all being held at once (at the Amazon-670K shape that is 1 GB).
    """
    with np.load(path, allow_pickle=False) as z:
        driver = json.loads(str(z[_DRIVER + "json"]))
        method.load_state_arrays(z)
    return driver


def train(method, train_data, test_data, out_dir, *, dataset: str, epochs: float = 1.0, eval_points: int = 2560,
          seed: int = 0, max_steps: int | None = None, max_train_seconds: float | None = None,
          patience: int = 0, resume: bool = False, progress: bool | None = None) -> dict:
    """Train ``method`` and write ``curve.csv``, ``run.json`` and ``model.npz`` into ``out_dir``.

    Every ``method.eval_every`` steps the model is scored on a fixed random sample of
    ``eval_points`` test points; at the end of each epoch on the whole test set. A NaN or infinite
    loss ends the run with ``status: failed``.

    Before the training clock starts, :meth:`Method.warm_up` pays for compilation and tracing
    (``compile_seconds``). The clock counts :meth:`Method.train_batch` calls only; a
    :class:`~slide.contention.ContentionMeter` records this process's CPU time in them and what
    other processes took meanwhile, so a busy machine is visible in ``run.json``.
    ``max_train_seconds`` is a safety cap (``max_train_seconds_cut`` says when it ended the run);
    ``patience`` > 0 stops after that many evaluations without a better P@1 (``stopped_early``).

    Returns
    -------
    dict
        The ``run.json`` record.
    """
    from .contention import ContentionMeter

    out = Path(out_dir)
    recorder = RunRecorder(out, method=method.name, dataset=dataset, seed=seed, threads=method.threads,
                           hyperparameters=method.hyperparameters())
    n, bs = len(train_data), method.batch_size
    steps_per_epoch = max(1, -(-n // bs))
    total_steps = int(np.ceil(epochs * steps_per_epoch))
    if max_steps is not None:
        total_steps = min(total_steps, int(max_steps))
    rows_eval = eval_sample(len(test_data), eval_points, seed)
    state = dict(step=0, samples=0, train_seconds=0.0, eval_seconds=0.0, wall_offset=0.0, batch_seconds=[],
                 compile_seconds=0.0, meter=None, best=None, since_best=0)
    model_path = out / "model.npz"
    if resume and model_path.exists():
        state.update(load_checkpoint(method, model_path))
        from .runs import read_curve

        if recorder.curve_path.exists():
            rows = read_curve(recorder.curve_path).to_dict("records")
            recorder.rows = [r for r in rows if r["step"] <= state["step"]]
        _log(f"resuming {method.name} at step {state['step']} from {model_path}")
    if progress is None:
        progress = sys.stderr.isatty()

    if state["step"] < total_steps:
        t0 = time.perf_counter()
        method.warm_up(train_data, epoch_order(n, seed, 0)[:bs])
        state["compile_seconds"] += time.perf_counter() - t0
        _log(f"{method.name}: compilation and warm-up {time.perf_counter() - t0:.1f}s (outside the training clock)")
    meter = ContentionMeter(method.threads)
    meter.resume(state["meter"])
    meter.start()
    start = time.perf_counter() - state["wall_offset"]
    losses: list[float] = []
    status, reason, cut, stopped_early = "completed", None, False, False
    last_metrics = None

    def record(kind_rows, epoch_value):
        nonlocal last_metrics
        t0 = time.perf_counter()
        metrics = evaluate(method, test_data, kind_rows)
        state["eval_seconds"] += time.perf_counter() - t0
        loss = float(np.mean(losses)) if losses else float("nan")
        losses.clear()
        recorder.add_point(step=state["step"], epoch=round(epoch_value, 4), samples=state["samples"],
                           train_seconds=round(state["train_seconds"], 4),
                           wall_seconds=round(time.perf_counter() - start, 4),
                           cpu_seconds=round(meter.cpu_seconds, 4), loss=loss,
                           p_at_1=metrics["p_at_1"], p_at_3=metrics["p_at_3"], p_at_5=metrics["p_at_5"],
                           eval_points=metrics["eval_points"])
        best = state["best"]
        if best is None or metrics["p_at_1"] > best["p_at_1"]:
            state["best"] = dict(p_at_1=metrics["p_at_1"], epoch=round(epoch_value, 4), step=state["step"])
            state["since_best"] = 0
        else:
            state["since_best"] += 1
        last_metrics = metrics
        if not progress:
            _log(f"{method.name} step {state['step']}/{total_steps} epoch {epoch_value:.2f} "
                 f"train {state['train_seconds']:.1f}s loss {loss:.4f} P@1 {metrics['p_at_1']:.4f} "
                 f"({metrics['eval_points']} points)")
        return metrics

    def checkpoint():
        state["wall_offset"] = time.perf_counter() - start
        meter.stop()
        state["meter"] = meter.state()
        save_checkpoint(method, model_path, state)
        meter.start()

    bar = tqdm(total=total_steps, initial=state["step"], unit="batch", disable=not progress,
               desc=f"{method.name} {dataset}", dynamic_ncols=True)
    try:
        while state["step"] < total_steps:
            epoch = state["step"] // steps_per_epoch
            order = epoch_order(n, seed, epoch)
            pos = state["step"] - epoch * steps_per_epoch
            batch_rows = order[pos * bs:(pos + 1) * bs]
            c0, t0 = time.process_time(), time.perf_counter()
            loss = method.train_batch(train_data, batch_rows)
            dt = time.perf_counter() - t0
            meter.add(dt, time.process_time() - c0)
            state["train_seconds"] += dt
            state["batch_seconds"].append(dt)
            state["step"] += 1
            state["samples"] += len(batch_rows)
            bar.update(1)
            if not np.isfinite(loss):
                raise DivergenceError(f"loss became {loss} at step {state['step']}")
            losses.append(float(loss))
            epoch_done = state["step"] % steps_per_epoch == 0 or state["step"] == total_steps
            cut = max_train_seconds is not None and state["train_seconds"] >= max_train_seconds
            if epoch_done or cut:
                m = record(np.arange(len(test_data), dtype=np.int64), state["step"] / steps_per_epoch)
                bar.set_postfix(p1=f"{m['p_at_1']:.3f}")
                checkpoint()
            elif method.eval_every and state["step"] % method.eval_every == 0:
                m = record(rows_eval, state["step"] / steps_per_epoch)
                bar.set_postfix(p1=f"{m['p_at_1']:.3f}")
            if cut:
                cut = state["step"] < total_steps
                if cut:
                    _log(f"{method.name}: the safety cap max_train_seconds={max_train_seconds:g} ended the run at "
                         f"step {state['step']}/{total_steps} (epoch {state['step'] / steps_per_epoch:.2f})")
                break
            if patience and state["since_best"] >= patience:
                stopped_early = state["step"] < total_steps
                if stopped_early:
                    if not epoch_done:
                        record(np.arange(len(test_data), dtype=np.int64), state["step"] / steps_per_epoch)
                        checkpoint()
                    _log(f"{method.name}: no better P@1 in {patience} evaluations; stopped at step {state['step']} "
                         f"(best {state['best']['p_at_1']:.4f} at epoch {state['best']['epoch']:g})")
                break
    except DivergenceError as err:
        status, reason = "failed", str(err)
    finally:
        bar.close()
        meter.stop()
    if status == "completed" and last_metrics is None:
        last_metrics = record(np.arange(len(test_data), dtype=np.int64), state["step"] / steps_per_epoch)
    final = None
    if last_metrics is not None:
        final = {k: last_metrics[k] for k in ("p_at_1", "p_at_3", "p_at_5", "ndcg_at_1", "ndcg_at_3",
                                              "ndcg_at_5", "eval_points")}
    batch_seconds = state["batch_seconds"]
    stats = method.stats()
    popularity = popularity_baseline(train_data, test_data)
    active = stats.get("active_per_sample_mean")
    return recorder.finish(
        status=status, reason=reason, final=final, train_seconds=state["train_seconds"],
        median_batch_seconds=float(np.median(batch_seconds)) if batch_seconds else None,
        extra=dict(steps=int(state["step"]), epochs=round(state["step"] / steps_per_epoch, 4),
                   samples=int(state["samples"]),
                   eval_seconds=round(state["eval_seconds"], 3),
                   compile_seconds=round(state["compile_seconds"], 3),
                   **meter.figures(),
                   best=state["best"], max_train_seconds=max_train_seconds, max_train_seconds_cut=bool(cut),
                   patience=int(patience), stopped_early=stopped_early,
                   active_per_sample_mean=active,
                   active_fraction=None if active is None else round(active / method.num_labels, 6),
                   popularity={k: popularity[k] for k in ("p_at_1", "p_at_3", "p_at_5")},
                   method_stats=stats))


def bench(method, data, *, batches: int = 20, warmup: int = 2, seed: int = 0, max_batches: int | None = None,
          progress: bool | None = None) -> dict:
    """Time ``batches`` training steps of ``method`` on ``data`` after ``warmup`` untimed ones.

    :meth:`Method.warm_up` runs first (``compile_seconds``). For a method that refreshes hash
    tables on a schedule, timing goes on past ``batches`` until at least two refreshes fell inside
    the timed window (at most ``max_batches``, default ``20 * batches``), so that
    ``mean_batch_seconds`` (refreshes included) sits beside the median; ``rehashes_in_window`` says
    how many there were. Contention figures as in :func:`train`.

    Returns the keys every method's ``bench`` command prints.
    """
    from .contention import ContentionMeter

    if progress is None:
        progress = sys.stderr.isatty()
    bs = method.batch_size
    limit = int(max_batches) if max_batches is not None else 20 * int(batches)
    rows_for = _bench_rows(len(data), seed, bs)
    t0 = time.perf_counter()
    method.warm_up(data, rows_for(0))
    compile_seconds = time.perf_counter() - t0
    for i in range(warmup):
        _bench_step(method, data, rows_for(i), i)
    refreshes0 = method.table_refreshes()
    times = []
    meter = ContentionMeter(method.threads).start()
    bar = tqdm(total=batches, unit="batch", disable=not progress, desc=f"bench {method.name}")
    while len(times) < batches or (refreshes0 is not None and method.table_refreshes() - refreshes0 < 2
                                   and len(times) < limit):
        c0 = time.process_time()
        dt = _bench_step(method, data, rows_for(warmup + len(times)), warmup + len(times))
        meter.add(dt, time.process_time() - c0)
        times.append(dt)
        bar.update(1)
    bar.close()
    meter.stop()
    times = np.asarray(times)
    stats = method.stats()
    med = float(np.median(times))
    out = {"method": method.name, "batches": int(len(times)), "batch_size": bs, "threads": method.threads,
           "median_batch_seconds": med, "mean_batch_seconds": float(times.mean()),
           "p10_batch_seconds": float(np.percentile(times, 10)),
           "p90_batch_seconds": float(np.percentile(times, 90)), "samples_per_second": bs / med,
           "active_per_sample_mean": stats.get("active_per_sample_mean"),
           "compile_seconds": round(compile_seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if refreshes0 is not None:
        out.update(rehashes_in_window=method.table_refreshes() - refreshes0, rehash_seconds=stats["rehash_seconds"])
    out.update(meter.figures())
    return out


def _bench_rows(n: int, seed: int, bs: int):
    """Rows of benchmark batch ``i``: consecutive slices of seeded epoch orders."""
    flat = np.zeros(0, dtype=np.int64)

    def rows_for(i: int) -> np.ndarray:
        nonlocal flat
        while flat.shape[0] < (i + 1) * bs:
            flat = np.concatenate([flat, epoch_order(n, seed, flat.shape[0] // n)])
        return flat[i * bs:(i + 1) * bs]

    return rows_for


def _bench_step(method, data, rows, i) -> float:
    t0 = time.perf_counter()
    loss = method.train_batch(data, rows)
    dt = time.perf_counter() - t0
    if not np.isfinite(loss):
        raise DivergenceError(f"loss became {loss} at benchmark batch {i}")
    return dt


__all__ = ["train", "bench", "evaluate", "eval_sample", "epoch_order", "SlideError"]
