"""Resume and outputs of the shared training loop (issue 10 items 4-9): nothing lost, nothing half-done.

A tiny NumPy method stands in for SLIDE and TensorFlow, so the loop is tested on its own; every
method's CLI goes through :func:`slide.training.train`.
"""

import errno
import hashlib
import json
import os
import zipfile

import numpy as np
import pytest

from slide.adapter import Method
from slide.data.dataset import XCDataset
from slide.errors import ConfigError, SlideError
from slide.runs import DamagedRunFile, load_run, read_curve
from slide.training import train


class Counter(Method):
    """Ranks labels by how often they were seen in training."""

    DEFAULTS = {"batch_size": 10, "eval_every": 3, "lr": 1e-3, "width": 4}
    name = "slide-counter"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.counts = np.zeros(self.num_labels)
        self.pad = np.zeros(self.config["width"])
        self.step = 0

    def train_batch(self, data, rows):
        np.add.at(self.counts, data.subset(rows).y_indices, 1.0)
        self.step += 1
        return 1.0 / self.step

    def predict_topk(self, data, rows, k=5):
        return np.tile(np.argsort(-self.counts, kind="stable")[:k], (len(rows), 1))

    def state_arrays(self):
        return {"counts": self.counts, "pad": self.pad, "step": np.array(self.step)}

    def load_state_arrays(self, arrays):
        counts = np.asarray(arrays["counts"], dtype=np.float64)
        if counts.shape != self.counts.shape:
            raise ValueError(f"counts has shape {counts.shape}, expected {self.counts.shape}")
        self.counts, self.step = counts.copy(), int(arrays["step"])


def _data(n, seed, labels=8):
    rng = np.random.default_rng(seed)
    per = min(2, labels)
    ys = [rng.choice(labels, size=per, replace=False) for _ in range(n)]
    return XCDataset(np.arange(n + 1, dtype=np.int64), rng.integers(0, 5, n).astype(np.int32),
                     np.ones(n, np.float32), np.arange(0, per * n + 1, per, dtype=np.int64),
                     np.concatenate(ys).astype(np.int32), 5, labels)


TRAIN, TEST = _data(95, 0), _data(40, 1)


def _run(out, *, overrides=None, seed=0, train_data=TRAIN, test_data=TEST, **kw):
    method = Counter.from_config(5, train_data.num_labels, overrides=overrides, seed=seed, threads=1)
    kw.setdefault("epochs", 2)
    kw.setdefault("eval_points", 16)
    return train(method, train_data, test_data, out, dataset="toy", seed=seed, **kw)


def _snapshot(folder):
    """Name -> (sha1 of the bytes, mtime_ns) of every file in ``folder``."""
    return {p.name: (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- item 5

def test_resuming_a_finished_run_is_a_no_op_that_says_so(tmp_path, capsys):
    first = _run(tmp_path)
    before = _snapshot(tmp_path)
    again = _run(tmp_path, resume=True)
    assert again == first
    assert _snapshot(tmp_path) == before
    assert "finished run" in capsys.readouterr().err
    assert not read_curve(tmp_path / "curve.csv")["loss"].isna().any()


def test_resuming_a_finished_run_for_more_epochs_extends_it(tmp_path):
    _run(tmp_path, epochs=1)
    longer = _run(tmp_path, epochs=2, resume=True)
    steps = read_curve(tmp_path / "curve.csv")["step"].tolist()
    assert longer["steps"] == 20 and steps == sorted(set(steps)) and steps[-1] == 20


def test_killed_after_the_last_checkpoint_adds_no_second_final_row(tmp_path):
    _run(tmp_path)
    (tmp_path / "run.json").unlink()  # killed between the final checkpoint and run.json
    curve_before = (tmp_path / "curve.csv").read_bytes()
    record = _run(tmp_path, resume=True)
    assert record["status"] == "completed" and record["steps"] == 20
    assert (tmp_path / "curve.csv").read_bytes() == curve_before
    assert record["final"]["p_at_1"] == read_curve(tmp_path / "curve.csv")["p_at_1"].iloc[-1]


# ----------------------------------------------------------------------------- item 6

@pytest.mark.parametrize("change, needles", [
    (dict(overrides={"lr": 0.5, "width": 9}), ["lr 0.001 -> 0.5", "width 4 -> 9"]),
    (dict(seed=7), ["seed 0 -> 7"]),
    (dict(train_data=_data(95, 5)), ["train data: same sizes"]),
    (dict(train_data=_data(80, 0)), ["train data (95 points"]),
    (dict(test_data=_data(30, 1)), ["test data (40 points"]),
    (dict(eval_points=8), ["eval_points 16 -> 8"]),
])
def test_resume_with_other_settings_or_data_is_refused(tmp_path, change, needles):
    _run(tmp_path, max_steps=5)
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError) as info:
        _run(tmp_path, resume=True, **change)
    message = str(info.value)
    assert "\n" not in message and "model.npz" in message and "cannot resume" in message
    for needle in needles:
        assert needle in message, message
    assert _snapshot(tmp_path) == before


def test_resume_of_a_finished_run_with_other_settings_is_refused_too(tmp_path):
    _run(tmp_path)
    with pytest.raises(ConfigError, match="lr 0.001 -> 0.5"):
        _run(tmp_path, resume=True, overrides={"lr": 0.5})


def test_resume_with_a_longer_schedule_is_allowed(tmp_path):
    _run(tmp_path, max_steps=5)
    record = _run(tmp_path, resume=True, epochs=3)
    assert record["steps"] == 30


# ----------------------------------------------------------------------------- item 4

def _damage_model(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "pickled":
        np.save(open(path, "wb"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif how == "missing-key":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "counts"}
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    elif how == "no-driver":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if not k.startswith("driver__")}
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    elif how == "wrong-shape":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["counts"] = np.zeros(3)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    elif how == "bad-crc":
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("counts.npy")
        raw = bytearray(data)
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        raw[start + info.compress_size - 1] ^= 0xFF
        path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "pickled", "missing-key", "no-driver",
                                 "wrong-shape", "bad-crc"])
def test_damaged_checkpoint_is_one_line_naming_it(tmp_path, how):
    _run(tmp_path, max_steps=5)
    _damage_model(tmp_path / "model.npz", how)
    before = _snapshot(tmp_path)
    with pytest.raises(DamagedRunFile) as info:
        _run(tmp_path, resume=True)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "model.npz")), message
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("content, needle", [
    (b"{not json", "not valid JSON"), (b"", "not valid JSON"), (b"\xff\xfe\x00garbage", "UTF-8"),
    (b"[1, 2]", "not a JSON object"), (b'{"status": "completed"}', "damaged"),
])
def test_damaged_run_json_is_one_line_naming_it(tmp_path, content, needle):
    _run(tmp_path, max_steps=5)
    (tmp_path / "run.json").write_bytes(content)
    before = _snapshot(tmp_path)
    with pytest.raises(DamagedRunFile) as info:
        _run(tmp_path, resume=True)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "run.json")) and needle in message, message
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("content", [
    b"", b"\x00\x01\x02\xff\xfe binary \x00\n\x89PNG", b"a,b,c\n1,2,3\n",
    b"step,epoch,samples,train_seconds,wall_seconds,cpu_seconds,loss,p_at_1,p_at_3,p_at_5,eval_points\n"
    b"x,1,1,1,1,1,1,1,1,1,1\n",
])
def test_damaged_curve_is_one_line_naming_it(tmp_path, content):
    _run(tmp_path, max_steps=5)
    (tmp_path / "curve.csv").write_bytes(content)
    before = _snapshot(tmp_path)
    with pytest.raises(DamagedRunFile) as info:
        _run(tmp_path, resume=True)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "curve.csv")), message
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- item 7

def test_a_data_set_with_fewer_than_five_labels_trains_and_is_recorded(tmp_path):
    train_data, test_data = _data(50, 0, labels=3), _data(20, 1, labels=3)
    record = _run(tmp_path, train_data=train_data, test_data=test_data, epochs=1)
    assert record["status"] == "completed" and load_run(tmp_path / "run.json") == record
    assert 0 < record["final"]["p_at_5"] <= 3 / 5 and record["popularity"]["p_at_5"] <= 3 / 5


# ----------------------------------------------------------------------------- item 8

def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_a_checkpoint_is_recorded_as_failed(tmp_path, monkeypatch):
    monkeypatch.setattr("slide.io.np.savez", _no_space)
    record = _run(tmp_path)
    assert record["status"] == "failed"
    assert str(tmp_path / "model.npz") in record["reason"] and "no space left" in record["reason"]
    assert load_run(tmp_path / "run.json")["status"] == "failed"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_disk_full_everywhere_is_one_line_naming_run_json(tmp_path, monkeypatch):
    monkeypatch.setattr("slide.io.np.savez", _no_space)
    monkeypatch.setattr("slide.io.atomic_write_bytes", _no_space)
    with pytest.raises(SlideError) as info:
        _run(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "run.json"))
    assert "not recorded" in message and "no space left" in message
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(tmp_path, monkeypatch):
    _run(tmp_path, max_steps=10)
    before = (tmp_path / "model.npz").read_bytes()
    monkeypatch.setattr("slide.io.np.savez", _no_space)
    record = _run(tmp_path, resume=True)
    assert record["status"] == "failed" and (tmp_path / "model.npz").read_bytes() == before


# ----------------------------------------------------------------------------- item 9

def test_stale_temporaries_of_our_own_naming_are_removed_on_start(tmp_path, capsys):
    _run(tmp_path, max_steps=5)
    stale = [tmp_path / ".model.npz.abc123.tmp.npz", tmp_path / ".curve.csv.x1.tmp.csv",
             tmp_path / ".run.json.zz.tmp.json"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    mine = tmp_path / ".model.npz.keep"  # not our naming: left alone
    mine.write_bytes(b"x")
    _run(tmp_path, resume=True)
    assert not any(p.exists() for p in stale) and mine.exists()
    assert "removed 3 temporary file(s)" in capsys.readouterr().err


def test_checkpoints_leave_no_temporaries(tmp_path):
    _run(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["curve.csv", "model.npz", "run.json"]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "completed"


def test_a_run_stopped_early_is_finished_unless_patience_is_relaxed(tmp_path, monkeypatch):
    # a constant ranking never improves P@1: patience 1 stops at the second evaluation
    monkeypatch.setattr(Counter, "train_batch", lambda self, data, rows: 1.0)
    first = _run(tmp_path, epochs=3, patience=1)
    assert first["stopped_early"] and first["steps"] < 30
    before = _snapshot(tmp_path)
    assert _run(tmp_path, epochs=3, patience=1, resume=True) == first
    assert _snapshot(tmp_path) == before
    relaxed = _run(tmp_path, epochs=3, patience=0, resume=True)
    assert relaxed["steps"] == 30 and not relaxed["stopped_early"]
