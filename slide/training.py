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

from .errors import ConfigError, DivergenceError, SlideError
from .io import OutputWriteError, remove_stale_temporaries
from .metrics import evaluate_topk, popularity_baseline
from .runs import DamagedRunFile, RunRecorder, peak_rss_mb, read_curve_for_resume, read_run_for_resume

_DRIVER = "driver__"
#: The files a run writes into its folder (through temporaries named ``.NAME.*.tmp.SUFFIX``).
OUTPUT_NAMES = ("model.npz", "curve.csv", "run.json")


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
    return evaluate_topk(method.predict_topk(data, rows, max(1, min(k, int(data.num_labels)))), data, rows)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def save_checkpoint(method, path, driver: dict) -> None:
    """Write ``model.npz``: the method's arrays plus the loop's position; no pickled objects.

    A failed write (disk full, read-only) is one :class:`~slide.io.OutputWriteError` naming
    ``path``; the previous checkpoint, if any, is left as it was.
    """
    from .io import save_npz_atomic

    arrays = dict(method.state_arrays())
    arrays[_DRIVER + "json"] = np.array(json.dumps(driver))
    arrays["model__header"] = np.array(json.dumps(dict(
        num_features=method.num_features, num_labels=method.num_labels, config=method.config,
        seed=method.seed, threads=method.threads)))
    try:
        save_npz_atomic(path, **arrays)
    except OSError as err:
        raise OutputWriteError(path, err) from None


def _damaged(path, err: BaseException) -> DamagedRunFile:
    text = " ".join(str(err).split()) or "no detail"
    return DamagedRunFile(path, f"damaged or not a checkpoint ({type(err).__name__}: {text[:160]})")


def read_checkpoint_header(path) -> tuple[dict, dict]:
    """The model header (config, seed, dimensions) and the loop's position stored in ``model.npz``.

    Raises :class:`~slide.runs.DamagedRunFile` naming ``path`` when it is not a readable checkpoint.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an .npz archive")
            missing = [k for k in (_DRIVER + "json", "model__header") if k not in z.files]
            if missing:
                raise DamagedRunFile(path, f"not a training checkpoint: lacks {missing}")
            driver = json.loads(str(z[_DRIVER + "json"]))
            header = json.loads(str(z["model__header"]))
    except (DamagedRunFile, MemoryError):
        raise
    except Exception as err:  # BadZipFile, EOFError, ValueError (pickled data), zlib and CRC errors
        raise _damaged(path, err) from None
    if not isinstance(driver, dict) or not isinstance(header, dict) or not isinstance(driver.get("step"), int):
        raise DamagedRunFile(path, "damaged: its loop position or header is not what a checkpoint holds")
    return header, driver


def load_checkpoint(method, path) -> dict:
    """Restore ``method`` from ``model.npz`` and return the loop's position.

    The open archive is handed over as a mapping, so arrays are read one at a time into the
    method's buffers instead of all being held at once (at the Amazon-670K shape that is 1 GB).
    A damaged or foreign file is one :class:`~slide.runs.DamagedRunFile` line naming it.
    """
    _, driver = read_checkpoint_header(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            method.load_state_arrays(z)
    except MemoryError:
        raise
    except Exception as err:  # a missing or misshapen array, a damaged member
        raise _damaged(path, err) from None
    return driver


def data_identity(data) -> dict:
    """Cheap identity of a data set for resume checks: sizes and a digest of its structure.

    The digest covers the row pointers, every label id and a strided sample of at most about 2**20
    feature ids and values (tens of milliseconds at the Amazon-670K shape).
    """
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    step = max(1, int(data.x_indices.shape[0]) >> 20)
    for arr in (data.x_indptr, data.y_indptr, data.y_indices, data.x_indices[::step], data.x_data[::step]):
        h.update(np.ascontiguousarray(arr).tobytes())
    return dict(points=int(len(data)), features=int(data.num_features), labels=int(data.num_labels),
                nnz=int(data.x_indptr[-1]), label_nnz=int(data.y_indptr[-1]), digest=h.hexdigest())


def _describe_data(ident: dict) -> str:
    return f"{ident.get('points')} points, {ident.get('features')} features, {ident.get('labels')} labels"


def _value(v) -> str:
    return json.dumps(v, sort_keys=True) if v is not _MISSING else "(unset)"


_MISSING = object()


def resume_differences(method, identity: dict, header: dict | None, driver: dict | None,
                       prior_run: dict | None) -> list[str]:
    """What differs between a run folder's recorded settings and data and this run's.

    Compares the checkpoint header (configuration, seed, dimensions) and the identity the loop
    stored in it (method, seed of the loop, evaluation sample size, train and test data) with
    ``identity`` and ``method``; without a checkpoint, ``run.json``'s method, seed and
    hyperparameters. Epochs, step and time limits and patience may differ: they extend a run.
    """
    diffs: list[str] = []
    now_cfg = json.loads(json.dumps(method.config))
    then_cfg = None
    then_seed = None
    if header is not None:
        then_cfg, then_seed = header.get("config"), header.get("seed")
        for key in ("num_features", "num_labels"):
            if key in header and header[key] != getattr(method, key):
                diffs.append(f"{key} {header[key]} -> {getattr(method, key)}")
    elif prior_run is not None:
        then_cfg, then_seed = prior_run.get("hyperparameters"), prior_run.get("seed")
        if prior_run.get("method") != method.name:
            diffs.append(f"method {prior_run.get('method')} -> {method.name}")
    if isinstance(then_cfg, dict):
        then_cfg = json.loads(json.dumps(then_cfg))
        for key in sorted(set(then_cfg) | set(now_cfg)):
            a, b = then_cfg.get(key, _MISSING), now_cfg.get(key, _MISSING)
            if a != b:
                diffs.append(f"{key} {_value(a)} -> {_value(b)}")
    then_ident = (driver or {}).get("identity") or {}
    if then_seed is not None and then_seed != method.seed:
        diffs.append(f"seed {then_seed} -> {method.seed}")
    elif "seed" in then_ident and then_ident["seed"] != identity["seed"]:
        diffs.append(f"seed (data order) {then_ident['seed']} -> {identity['seed']}")
    if "method" in then_ident and then_ident["method"] != identity["method"]:
        diffs.append(f"method {then_ident['method']} -> {identity['method']}")
    if "eval_points" in then_ident and then_ident["eval_points"] != identity["eval_points"]:
        diffs.append(f"eval_points {then_ident['eval_points']} -> {identity['eval_points']}")
    for part in ("train", "test"):
        a, b = then_ident.get(part), identity.get(part)
        if a and b and a != b:
            sizes = _describe_data(a), _describe_data(b)
            diffs.append(f"{part} data ({sizes[0]}) -> ({sizes[1]})" if sizes[0] != sizes[1]
                         else f"{part} data: same sizes ({sizes[0]}), different content")
    return diffs


def _finished(prior_run: dict | None, driver: dict | None, total_steps: int,
              max_train_seconds: float | None, patience: int = 0) -> bool:
    """Whether ``run.json`` records a completed run that this request would not extend.

    A run stopped early stays finished while ``patience`` is as strict (set and not larger); one
    the safety cap cut, while ``max_train_seconds`` is not above what it trained.
    """
    if not prior_run or prior_run.get("status") != "completed":
        return False
    steps = int(prior_run.get("steps", -1))
    if driver is not None and int(driver.get("step", -1)) != steps:
        return False
    if steps >= total_steps:
        return True
    if prior_run.get("stopped_early") and 0 < patience <= int(prior_run.get("patience") or 0):
        return True
    return bool(prior_run.get("max_train_seconds_cut") and max_train_seconds is not None
                and float(prior_run.get("train_seconds", 0.0)) >= max_train_seconds)


def check_run_settings(*, epochs=1.0, eval_points=2560, seed=0, max_steps=None, max_train_seconds=None,
                       patience=0, eval_every=None) -> None:
    """Refuse loop settings that cannot mean what they say, naming the command-line flag.

    ``epochs`` must be finite and positive; ``max_steps`` and ``max_train_seconds``, when given,
    positive; ``seed`` and ``patience`` >= 0; ``eval_points`` >= 0, and >= 1 when the method
    evaluates on the fixed test sample every ``eval_every`` > 0 steps (0 points would record a
    P@1 of 0 over nothing).
    """
    import math
    import numbers

    def number(name, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ConfigError(f"{name} must be a number, got {v!r}")
        return float(v)

    e = number("--epochs", epochs)
    if not math.isfinite(e) or e <= 0:
        raise ConfigError(f"--epochs must be a positive finite number, got {epochs!r}")
    for name, v in (("--eval-points", eval_points), ("--seed", seed), ("--patience", patience)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
    if seed >= 2**63:
        raise ConfigError(f"--seed must be below 2**63, got {seed}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral)
                                  or max_steps < 1):
        raise ConfigError(f"--max-steps must be an integer >= 1 (leave it out for no limit), got {max_steps!r}")
    if max_train_seconds is not None:
        t = number("--max-train-seconds", max_train_seconds)
        if not t > 0 or math.isnan(t):
            raise ConfigError(f"--max-train-seconds must be positive (leave it out for no cap), got {max_train_seconds!r}")
    if eval_every and eval_points == 0:
        raise ConfigError(f"--eval-points must be >= 1: the method evaluates a fixed test sample every {eval_every} "
                          f"steps (set eval_every=0 to evaluate at epoch ends only)")


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

    check_run_settings(epochs=epochs, eval_points=eval_points, seed=seed, max_steps=max_steps,
                       max_train_seconds=max_train_seconds, patience=patience, eval_every=method.eval_every)
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
                 compile_seconds=0.0, meter=None, best=None, since_best=0,
                 identity=dict(method=method.name, seed=int(seed), eval_points=int(len(rows_eval)),
                               train=data_identity(train_data), test=data_identity(test_data)))
    model_path = out / "model.npz"
    if resume:
        # Read and check everything before anything is written: a damaged file or different
        # settings leave the folder as it was.
        prior_run = read_run_for_resume(recorder.run_path) if recorder.run_path.exists() else None
        rows = read_curve_for_resume(recorder.curve_path) if recorder.curve_path.exists() else []
        header = driver = None
        if model_path.exists():
            header, driver = read_checkpoint_header(model_path)
        diffs = resume_differences(method, state["identity"], header, driver, prior_run)
        if diffs:
            raise ConfigError(f"{model_path if header is not None else recorder.run_path}: cannot resume: the run "
                              f"was made with other settings or data ({'; '.join(diffs)}); use another --out, "
                              f"or drop --resume to start over")
        if _finished(prior_run, driver, total_steps, max_train_seconds, patience):
            final = prior_run.get("final") or {}
            _log(f"{method.name}: {out} is a finished run ({prior_run['steps']} steps, P@1 "
                 f"{final.get('p_at_1', float('nan')):.4f}); nothing to do, its files are left as they are")
            return prior_run
        if driver is not None:
            identity = state["identity"]
            state.update(load_checkpoint(method, model_path))
            state["identity"] = identity
            recorder.rows = [r for r in rows if r["step"] <= state["step"]]
            _log(f"resuming {method.name} at step {state['step']} from {model_path}")
    removed, size = remove_stale_temporaries(out, OUTPUT_NAMES)
    if removed:
        _log(f"{method.name}: removed {removed} temporary file(s) ({size / 2**20:.1f} MiB) that an interrupted "
             f"write left in {out}")
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
        try:
            save_checkpoint(method, model_path, state)
        finally:
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
    except (DivergenceError, OutputWriteError) as err:
        status, reason = "failed", str(err)
    finally:
        bar.close()
        meter.stop()
    if status == "completed" and last_metrics is None:
        everything = np.arange(len(test_data), dtype=np.int64)
        last = recorder.rows[-1] if recorder.rows else None
        if last is not None and int(last["step"]) == state["step"] and int(last["eval_points"]) == len(test_data):
            last_metrics = evaluate(method, test_data, everything)  # its curve row is there already
        else:
            try:
                last_metrics = record(everything, state["step"] / steps_per_epoch)
            except OutputWriteError as err:
                status, reason = "failed", str(err)
    final = None
    if last_metrics is not None:
        final = {k: last_metrics[k] for k in ("p_at_1", "p_at_3", "p_at_5", "ndcg_at_1", "ndcg_at_3",
                                              "ndcg_at_5", "eval_points")}
    batch_seconds = state["batch_seconds"]
    stats = method.stats()
    popularity = popularity_baseline(train_data, test_data)
    active = stats.get("active_per_sample_mean")
    outcome = dict(
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
    try:
        return recorder.finish(**outcome)
    except OutputWriteError as err:
        if reason:
            raise SlideError(f"{err}; the run is not recorded (it failed: {reason})") from None
        raise SlideError(f"{err}; the run is not recorded as finished") from None


def bench(method, data, *, batches: int = 20, warmup: int = 2, seed: int = 0, max_batches: int | None = None,
          progress: bool | None = None, remeasure_bandwidth: bool | None = None) -> dict:
    """Time ``batches`` training steps of ``method`` on ``data`` after ``warmup`` untimed ones.

    :meth:`Method.warm_up` runs first (``compile_seconds``). For a method that refreshes hash
    tables on a schedule, timing goes on past ``batches`` until at least two refreshes fell inside
    the timed window (at most ``max_batches``, default ``20 * batches``), so that
    ``mean_batch_seconds`` (refreshes included) sits beside the median; ``rehashes_in_window`` says
    how many there were. Contention figures as in :func:`train`.

    A method that counts its memory traffic (:meth:`Method.traffic` not None, and
    ``bytes_moved(data, counts)``, as SLIDE's) also gets ``bytes_per_batch`` (the mean over the timed batches,
    :func:`slide.bandwidth.slide_bytes`), ``stream_gbps`` (the machine's bandwidth on the method's
    threads, :func:`slide.bandwidth.stream_gbps`, measured after the timed window when not cached, or
    when ``remeasure_bandwidth``), ``achieved_gbps``, ``floor_bytes_per_batch`` (the distinct rows), ``floor_seconds`` (the time
    to move those at ``stream_gbps``) and ``x_of_floor`` (median batch seconds over the floor), and one line
    about them on stderr.

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
    traffic0 = method.traffic()
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
    if traffic0 is not None and len(times):
        from .bandwidth import floor_figures, floor_line, stream_gbps

        counts = {k: v - traffic0[k] for k, v in method.traffic().items()}
        moved = method.bytes_moved(data, counts)
        out["bytes_per_batch"] = moved["total"] / len(times)
        out["floor_bytes_per_batch"] = moved["distinct_total"] / len(times)
        out["stream_gbps"] = stream_gbps(method.threads, remeasure=remeasure_bandwidth)
        out.update(floor_figures(out["bytes_per_batch"], out["floor_bytes_per_batch"], med, out["stream_gbps"]))
        _log(floor_line(method.name, out))
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
