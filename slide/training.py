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
#: Running totals in a method's ``stats()`` that :func:`bench` reports per batch, by phase.
PHASE_KEYS = ("forward_backward_seconds", "adam_seconds", "rehash_seconds")


def _phase_keys(stats: dict) -> list[str]:
    """:data:`PHASE_KEYS`, then the parts of forward_backward that SLIDE's row pass times
    (``row_<phase>_seconds``, zero under the sample pass)."""
    return [*PHASE_KEYS, *(k for k in stats if k.startswith("row_") and k.endswith("_seconds"))]


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
        # a key the folder predates had its default's behaviour (see Method.load)
        then_cfg = json.loads(json.dumps({**type(method).DEFAULTS, **then_cfg}))
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
    With ``resume``, a finished run is returned as it is and a checkpoint is continued.

    Returns
    -------
    dict
        The ``run.json`` record.

    Raises
    ------
    ConfigError
        Impossible loop settings, or ``resume`` in a folder made with other settings or data.
    """
    check_run_settings(epochs=epochs, eval_points=eval_points, seed=seed, max_steps=max_steps,
                       max_train_seconds=max_train_seconds, patience=patience, eval_every=method.eval_every)
    run = _Run(method, train_data, test_data, out_dir, dataset=dataset, epochs=epochs, eval_points=eval_points,
               seed=seed, max_steps=max_steps, max_train_seconds=max_train_seconds, patience=patience)
    if resume:
        finished = run.resume()
        if finished is not None:
            return finished
    run.prepare(sys.stderr.isatty() if progress is None else progress)
    run.loop()
    return run.finish()


class _Run:
    """One :func:`train` call: its settings, the loop's position and the outputs it writes.

    ``state`` is what a checkpoint stores (and a resumed run restores): step, samples, clocks,
    the contention meter's figures, the best P@1 and the identity of the run's settings and data.
    """

    def __init__(self, method, train_data, test_data, out_dir, *, dataset, epochs, eval_points, seed, max_steps,
                 max_train_seconds, patience):
        self.method, self.train_data, self.test_data = method, train_data, test_data
        self.dataset, self.seed, self.max_train_seconds, self.patience = dataset, seed, max_train_seconds, patience
        self.out = Path(out_dir)
        self.model_path = self.out / "model.npz"
        self.recorder = RunRecorder(self.out, method=method.name, dataset=dataset, seed=seed,
                                    threads=method.threads, hyperparameters=method.hyperparameters())
        self.n, self.bs = len(train_data), method.batch_size
        self.steps_per_epoch = max(1, -(-self.n // self.bs))
        self.total_steps = int(np.ceil(epochs * self.steps_per_epoch))
        if max_steps is not None:
            self.total_steps = min(self.total_steps, int(max_steps))
        self.rows_eval = eval_sample(len(test_data), eval_points, seed)
        self.state = dict(step=0, samples=0, train_seconds=0.0, eval_seconds=0.0, wall_offset=0.0,
                          batch_seconds=[], compile_seconds=0.0, meter=None, best=None, since_best=0,
                          identity=dict(method=method.name, seed=int(seed), eval_points=int(len(self.rows_eval)),
                                        train=data_identity(train_data), test=data_identity(test_data)))
        self.losses: list[float] = []        # since the last evaluation
        self.last_metrics = None
        self.status, self.reason, self.cut, self.stopped_early = "completed", None, False, False
        self.progress = False
        self.meter = self.bar = None
        self.start = 0.0                     # perf_counter of wall second 0 (earlier when resumed)

    @property
    def epoch(self) -> float:
        return self.state["step"] / self.steps_per_epoch

    def all_test_rows(self) -> np.ndarray:
        return np.arange(len(self.test_data), dtype=np.int64)

    def resume(self) -> dict | None:
        """The prior ``run.json`` record when the folder holds a finished run; else None, with the
        checkpoint (if any) restored.

        Everything is read and checked before anything is written: a damaged file or other
        settings leave the folder as it was.
        """
        rec, model_path, method = self.recorder, self.model_path, self.method
        prior_run = read_run_for_resume(rec.run_path) if rec.run_path.exists() else None
        rows = read_curve_for_resume(rec.curve_path) if rec.curve_path.exists() else []
        header = driver = None
        if model_path.exists():
            header, driver = read_checkpoint_header(model_path)
        diffs = resume_differences(method, self.state["identity"], header, driver, prior_run)
        if diffs:
            raise ConfigError(f"{model_path if header is not None else rec.run_path}: cannot resume: the run "
                              f"was made with other settings or data ({'; '.join(diffs)}); use another --out, "
                              f"or drop --resume to start over")
        if _finished(prior_run, driver, self.total_steps, self.max_train_seconds, self.patience):
            final = prior_run.get("final") or {}
            _log(f"{method.name}: {self.out} is a finished run ({prior_run['steps']} steps, P@1 "
                 f"{final.get('p_at_1', float('nan')):.4f}); nothing to do, its files are left as they are")
            return prior_run
        if driver is not None:
            identity = self.state["identity"]
            self.state.update(load_checkpoint(method, model_path))
            self.state["identity"] = identity
            rec.rows = [r for r in rows if r["step"] <= self.state["step"]]
            _log(f"resuming {method.name} at step {self.state['step']} from {model_path}")
        return None

    def prepare(self, progress: bool) -> None:
        """Remove what interrupted writes left, then warm the method up outside the training clock."""
        removed, size = remove_stale_temporaries(self.out, OUTPUT_NAMES)
        if removed:
            _log(f"{self.method.name}: removed {removed} temporary file(s) ({size / 2**20:.1f} MiB) that an "
                 f"interrupted write left in {self.out}")
        self.progress = progress
        if self.state["step"] < self.total_steps:
            t0 = time.perf_counter()
            self.method.warm_up(self.train_data, epoch_order(self.n, self.seed, 0)[:self.bs])
            self.state["compile_seconds"] += time.perf_counter() - t0
            _log(f"{self.method.name}: compilation and warm-up {time.perf_counter() - t0:.1f}s "
                 f"(outside the training clock)")

    def loop(self) -> None:
        """Step until the planned steps, the safety cap or patience ends the run; a diverged loss or
        a failed write ends it as failed."""
        from .contention import ContentionMeter

        self.meter = ContentionMeter(self.method.threads)
        self.meter.resume(self.state["meter"])
        self.meter.start()
        self.start = time.perf_counter() - self.state["wall_offset"]
        self.bar = tqdm(total=self.total_steps, initial=self.state["step"], unit="batch", disable=not self.progress,
                        desc=f"{self.method.name} {self.dataset}", dynamic_ncols=True)
        try:
            while self.state["step"] < self.total_steps and not self.step():
                pass
        except (DivergenceError, OutputWriteError) as err:
            self.status, self.reason = "failed", str(err)
        finally:
            self.bar.close()
            self.meter.stop()

    def step(self) -> bool:
        """One training step, then the evaluation and checkpoint it is due; True when the run ends here."""
        st, spe = self.state, self.steps_per_epoch
        epoch_index = st["step"] // spe
        pos = st["step"] - epoch_index * spe
        batch_rows = epoch_order(self.n, self.seed, epoch_index)[pos * self.bs:(pos + 1) * self.bs]
        c0, t0 = time.process_time(), time.perf_counter()
        loss = self.method.train_batch(self.train_data, batch_rows)
        dt = time.perf_counter() - t0
        self.meter.add(dt, time.process_time() - c0)
        st["train_seconds"] += dt
        st["batch_seconds"].append(dt)
        st["step"] += 1
        st["samples"] += len(batch_rows)
        self.bar.update(1)
        if not np.isfinite(loss):
            raise DivergenceError(f"loss became {loss} at step {st['step']}")
        self.losses.append(float(loss))
        epoch_done = st["step"] % spe == 0 or st["step"] == self.total_steps
        self.cut = self.max_train_seconds is not None and st["train_seconds"] >= self.max_train_seconds
        if epoch_done or self.cut:
            self.bar.set_postfix(p1=f"{self.record(self.all_test_rows())['p_at_1']:.3f}")
            self.checkpoint()
        elif self.method.eval_every and st["step"] % self.method.eval_every == 0:
            self.bar.set_postfix(p1=f"{self.record(self.rows_eval)['p_at_1']:.3f}")
        return self.ends(epoch_done)

    def ends(self, epoch_done: bool) -> bool:
        """Whether the safety cap or patience ends the run after this step (scored and saved if it
        stops early between epochs)."""
        st, name = self.state, self.method.name
        if self.cut:
            self.cut = st["step"] < self.total_steps  # reaching the planned steps on the cap is no cut
            if self.cut:
                _log(f"{name}: the safety cap max_train_seconds={self.max_train_seconds:g} ended the run at "
                     f"step {st['step']}/{self.total_steps} (epoch {self.epoch:.2f})")
            return True
        if not (self.patience and st["since_best"] >= self.patience):
            return False
        self.stopped_early = st["step"] < self.total_steps
        if self.stopped_early:
            if not epoch_done:
                self.record(self.all_test_rows())
                self.checkpoint()
            _log(f"{name}: no better P@1 in {self.patience} evaluations; stopped at step {st['step']} "
                 f"(best {st['best']['p_at_1']:.4f} at epoch {st['best']['epoch']:g})")
        return True

    def record(self, rows: np.ndarray) -> dict:
        """Score test ``rows``, add a curve row (mean loss since the last one) and track the best P@1."""
        st = self.state
        t0 = time.perf_counter()
        metrics = evaluate(self.method, self.test_data, rows)
        st["eval_seconds"] += time.perf_counter() - t0
        loss = float(np.mean(self.losses)) if self.losses else float("nan")
        self.losses.clear()
        self.recorder.add_point(step=st["step"], epoch=round(self.epoch, 4), samples=st["samples"],
                                train_seconds=round(st["train_seconds"], 4),
                                wall_seconds=round(time.perf_counter() - self.start, 4),
                                cpu_seconds=round(self.meter.cpu_seconds, 4), loss=loss,
                                p_at_1=metrics["p_at_1"], p_at_3=metrics["p_at_3"], p_at_5=metrics["p_at_5"],
                                eval_points=metrics["eval_points"])
        if st["best"] is None or metrics["p_at_1"] > st["best"]["p_at_1"]:
            st["best"] = dict(p_at_1=metrics["p_at_1"], epoch=round(self.epoch, 4), step=st["step"])
            st["since_best"] = 0
        else:
            st["since_best"] += 1
        self.last_metrics = metrics
        if not self.progress:
            _log(f"{self.method.name} step {st['step']}/{self.total_steps} epoch {self.epoch:.2f} "
                 f"train {st['train_seconds']:.1f}s loss {loss:.4f} P@1 {metrics['p_at_1']:.4f} "
                 f"({metrics['eval_points']} points)")
        return metrics

    def checkpoint(self) -> None:
        """Save ``model.npz`` with the loop's position; the meter pauses so the write is not counted."""
        self.state["wall_offset"] = time.perf_counter() - self.start
        self.meter.stop()
        self.state["meter"] = self.meter.state()
        try:
            save_checkpoint(self.method, self.model_path, self.state)
        finally:
            self.meter.start()

    def finish(self) -> dict:
        """Score the whole test set if no evaluation did yet, write ``run.json`` and return its record."""
        if self.status == "completed" and self.last_metrics is None:
            last = self.recorder.rows[-1] if self.recorder.rows else None
            if (last is not None and int(last["step"]) == self.state["step"]
                    and int(last["eval_points"]) == len(self.test_data)):
                self.last_metrics = evaluate(self.method, self.test_data, self.all_test_rows())  # row is there
            else:
                try:
                    self.record(self.all_test_rows())
                except OutputWriteError as err:
                    self.status, self.reason = "failed", str(err)
        try:
            return self.recorder.finish(**self.outcome())
        except OutputWriteError as err:
            if self.reason:
                raise SlideError(f"{err}; the run is not recorded (it failed: {self.reason})") from None
            raise SlideError(f"{err}; the run is not recorded as finished") from None

    def outcome(self) -> dict:
        """The keyword arguments of :meth:`RunRecorder.finish`: status, final metrics, clocks, figures."""
        st, method = self.state, self.method
        final = None
        if self.last_metrics is not None:
            final = {k: self.last_metrics[k] for k in ("p_at_1", "p_at_3", "p_at_5", "ndcg_at_1", "ndcg_at_3",
                                                       "ndcg_at_5", "eval_points")}
        batch_seconds = st["batch_seconds"]
        stats = method.stats()
        popularity = popularity_baseline(self.train_data, self.test_data)
        active = stats.get("active_per_sample_mean")
        return dict(
            status=self.status, reason=self.reason, final=final, train_seconds=st["train_seconds"],
            median_batch_seconds=float(np.median(batch_seconds)) if batch_seconds else None,
            extra=dict(steps=int(st["step"]), epochs=round(self.epoch, 4), samples=int(st["samples"]),
                       eval_seconds=round(st["eval_seconds"], 3), compile_seconds=round(st["compile_seconds"], 3),
                       **self.meter.figures(),
                       best=st["best"], max_train_seconds=self.max_train_seconds,
                       max_train_seconds_cut=bool(self.cut), patience=int(self.patience),
                       stopped_early=self.stopped_early, active_per_sample_mean=active,
                       active_fraction=None if active is None else round(active / method.num_labels, 6),
                       popularity={k: popularity[k] for k in ("p_at_1", "p_at_3", "p_at_5")},
                       method_stats=stats))


def bench(method, data, *, batches: int = 20, warmup: int = 2, seed: int = 0, max_batches: int | None = None,
          progress: bool | None = None, remeasure_bandwidth: bool | None = None) -> dict:
    """Time ``batches`` training steps of ``method`` on ``data`` after ``warmup`` untimed ones.

    :meth:`Method.warm_up` runs first (``compile_seconds``). For a method that refreshes hash
    tables on a schedule, timing goes on past ``batches`` until at least two refreshes fell inside
    the timed window (at most ``max_batches``, default ``20 * batches``), so that
    ``mean_batch_seconds`` (refreshes included) sits beside the median; ``rehashes_in_window`` says
    how many there were. Contention figures as in :func:`train`.

    A method that counts its memory traffic (:meth:`Method.traffic` not None, and
    ``bytes_moved(data, counts)``, as SLIDE's) also gets ``bytes_per_batch`` (the mean over the timed
    batches, :func:`slide.bandwidth.slide_bytes`, table refreshes left out, since the median step has
    none; ``refresh_bytes_per_batch`` is their share), ``stream_gbps`` (the machine's bandwidth on the
    method's threads, :func:`slide.bandwidth.stream_entry`, measured after the timed window when not
    cached, or when ``remeasure_bandwidth``) and ``stream_measured`` (when: on a shared machine the
    figure moves), ``achieved_gbps``, ``floor_bytes_per_batch`` (the
    distinct rows, refreshes left out), ``floor_seconds`` (the time to move those at ``stream_gbps``)
    and ``x_of_floor`` (median batch seconds over the floor), and one line about them on stderr; with
    phase timings, ``phase_floor``: each phase's mean seconds, floor bytes and seconds and its
    ``x_of_floor`` (:func:`slide.bandwidth.phase_floor`), printed as a table; and ``rows_floor``
    (``rows_floor(counts)``, SLIDE's: a batch's distinct output rows read and written back scattered with
    no arithmetic, :func:`slide.bandwidth.measure_rows`, the rate such rows move at) with
    ``x_of_rows_floor``, the row pass's gradient phase over it (None without one), and
    ``x_of_step_floor``, it over ``floor_seconds`` (those rows alone, as a multiple of the whole
    step's floor: a step that rewrites them cannot print a smaller ``x_of_floor`` unless its rows
    move faster than these), printed on a line.

    A method whose :meth:`Method.stats` keeps running totals of :data:`PHASE_KEYS` also gets
    ``phase_seconds_per_batch``: each phase's seconds over the timed window per timed batch (the
    rehash one included), so that runs at different thread counts show which phase scales; SLIDE's
    ``row_*`` entries split its forward_backward by the row pass's phases.

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
    stats0 = method.stats()
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
    phases = {k[:-len("_seconds")]: (stats[k] - stats0[k]) / len(times)
              for k in _phase_keys(stats) if stats.get(k) is not None and stats0.get(k) is not None}
    if phases:
        out["phase_seconds_per_batch"] = phases
    out.update(meter.figures())
    if traffic0 is not None and len(times):
        from .bandwidth import floor_figures, floor_line, phase_floor, phase_table, rows_floor_line, stream_entry

        counts = {k: v - traffic0[k] for k, v in method.traffic().items()}
        moved = method.bytes_moved(data, counts)
        # the median step refreshes no table (refreshes fall in a few steps of a window), so the
        # figures set beside it leave the refreshes' bytes out; the phase table amortises them
        out["bytes_per_batch"] = (moved["total"] - moved["refresh"]) / len(times)
        out["floor_bytes_per_batch"] = (moved["distinct_total"] - moved["refresh"]) / len(times)
        out["refresh_bytes_per_batch"] = moved["refresh"] / len(times)
        stream = stream_entry(method.threads, remeasure=remeasure_bandwidth)
        out["stream_gbps"], out["stream_measured"] = stream["gbps"], stream["measured"]
        out.update(floor_figures(out["bytes_per_batch"], out["floor_bytes_per_batch"], med, out["stream_gbps"]))
        _log(floor_line(method.name, out))
        if phases and moved.get("by_phase") is not None:
            out["phase_floor"] = phase_floor(moved["by_phase"], phases, len(times), out["stream_gbps"])
            _log(phase_table(method.name, out["phase_floor"], out["stream_gbps"]))
        rows = method.rows_floor(counts)
        if rows is not None:
            grads = phases.get("row_grads")
            # the rows alone against the whole step's floor: how close any step that rewrites them can come
            out["rows_floor"] = dict(rows, x_of_rows_floor=grads / rows["seconds"] if grads else None,
                                     x_of_step_floor=rows["seconds"] / out["floor_seconds"])
            _log(rows_floor_line(method.name, out["rows_floor"]))
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
