"""The real ``slide data ...`` command in a subprocess: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slide.data import read_xc, synth_shape, test_order

REPO = Path(__file__).resolve().parents[1]


def slide_cmd(*args, cwd=None, env_extra=None, cache_dir=None):
    """Run ``python -m slide.cli data ...`` (or the data commands alone if the CLI is absent)."""
    module = "slide.cli" if (REPO / "slide" / "cli.py").exists() else "slide.data.commands"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if cache_dir is not None:
        env["SLIDE_CACHE_DIR"] = str(cache_dir)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", module, "data", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, env=env, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("slide: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def test_stats_on_bibtex(bibtex_dir, tmp_path):
    proc = slide_cmd("stats", bibtex_dir / "Bibtex_data.txt", cache_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    assert (st["points"], st["features"], st["labels"]) == (7395, 1836, 159)
    assert round(st["avg_points_per_label"], 2) == 111.71
    assert round(st["avg_labels_per_point"], 2) == 2.40
    proc = slide_cmd("stats", bibtex_dir / "Bibtex_data.txt", "--split", bibtex_dir / "bibtex_trSplit.txt",
                     "--column", 1, cache_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["points"] == 4880
    proc = slide_cmd("stats", bibtex_dir / "Bibtex_data.txt", "--split", bibtex_dir / "bibtex_tstSplit.txt",
                     cache_dir=tmp_path)
    assert json.loads(proc.stdout)["points"] == 2515


def test_stats_on_bad_file_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("3 10 5\n0 1:0.5\n 2:nan\n1 3:1\n")
    proc = slide_cmd("stats", bad, cache_dir=tmp_path / "c")
    assert_one_line_error(proc, f"{bad}:3:", "NaN")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]


def test_synth_then_stats_match_targets(tmp_path):
    out = tmp_path / "syn"
    proc = slide_cmd("synth", "--like", "amazon-670k", "--scale", "0.002", "--seed", "4", "--out", out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["train"] == str(out / "train.txt") and res["test"] == str(out / "test.txt")
    shape = synth_shape("amazon-670k", 0.002)
    for name, n in (("train.txt", shape.train), ("test.txt", shape.test)):
        proc = slide_cmd("stats", out / name, "--no-cache", cache_dir=tmp_path / "c")
        st = json.loads(proc.stdout)
        assert (st["points"], st["features"], st["labels"]) == (n, shape.features, shape.labels)
        assert st["avg_labels_per_point"] == pytest.approx(5.45, rel=0.05)
        assert st["avg_features_per_point"] == pytest.approx(75, rel=0.05)
    first = (out / "train.txt").read_bytes()
    proc = slide_cmd("synth", "--like", "amazon-670k", "--scale", "0.002", "--seed", "4", "--out", out)
    assert (out / "train.txt").read_bytes() == first  # deterministic


def test_synth_bad_arguments(tmp_path):
    proc = slide_cmd("synth", "--like", "nope", "--scale", "0.1", "--out", tmp_path / "x")
    assert_one_line_error(proc, "unknown dataset")
    proc = slide_cmd("synth", "--like", "amazon-670k", "--scale", "9", "--out", tmp_path / "x")
    assert_one_line_error(proc, "--scale")
    assert not (tmp_path / "x").exists()


def write_pair(d: Path):
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.txt").write_text("3 6 4\n0,2 1:0.5 3:2\n 0:1\n3 5:0.25\n")
    (d / "test.txt").write_text("2 6 4\n1 2:1\n0,3 4:0.5 5:1\n")


def test_prepare_builds_caches_and_test_order(tmp_path):
    d = tmp_path / "ds"
    write_pair(d)
    proc = slide_cmd("prepare", "--train", d / "train.txt", "--test", d / "test.txt", cache_dir=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["test_order"] == str(d / "test_order.npy")
    assert sorted(p.name for p in d.iterdir()) == ["test.txt", "test.txt.cache.npz", "test_order.npy",
                                                  "train.txt", "train.txt.cache.npz"]
    assert np.array_equal(np.load(d / "test_order.npy"), test_order(2, 0))


def test_prepare_with_splits_and_out_dir(bibtex_dir, tmp_path):
    data = bibtex_dir / "Bibtex_data.txt"
    proc = slide_cmd("prepare", "--train", data, "--test", data, "--train-split", bibtex_dir / "bibtex_trSplit.txt",
                     "--test-split", bibtex_dir / "bibtex_tstSplit.txt", "--out", tmp_path / "o",
                     cache_dir=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert (res["train_points"], res["test_points"]) == (4880, 2515)
    assert len(np.load(tmp_path / "o" / "test_order.npy")) == 2515
    # the read-only data folder gets nothing; without --out prepare refuses
    proc = slide_cmd("prepare", "--train", data, "--test", data, "--train-split", bibtex_dir / "bibtex_trSplit.txt",
                     "--test-split", bibtex_dir / "bibtex_tstSplit.txt", cache_dir=tmp_path / "c")
    assert_one_line_error(proc, "read-only", "--out")


def test_prepare_bad_test_file_leaves_no_output(tmp_path):
    d = tmp_path / "ds"
    write_pair(d)
    (d / "test.txt").write_text("2 6 4\n1 2:1\n0,3 4:0.5 9:1\n")
    proc = slide_cmd("prepare", "--train", d / "train.txt", "--test", d / "test.txt", cache_dir=tmp_path / "c")
    assert_one_line_error(proc, f"{d / 'test.txt'}:3:", "feature index 9")
    assert sorted(p.name for p in d.iterdir()) == ["test.txt", "train.txt"]
    assert not (tmp_path / "c").exists()


def test_fetch_without_network_is_one_line(tmp_path):
    proc = slide_cmd("fetch", "delicious-200k", "--root", tmp_path / "data", "--no-progress",
                     "--url-template", "http://127.0.0.1:9/{id}")
    assert_one_line_error(proc, "could not fetch delicious-200k", "place the files by hand",
                          str(tmp_path / "data" / "raw" / "delicious-200k" / "DeliciousLarge"))
    assert not (tmp_path / "data").exists()


def test_bench_small(tmp_path):
    proc = slide_cmd("bench", "--like", "amazon-670k", "--scale", "0.002", "--dir", tmp_path / "b",
                     "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    for key in ("parse_MB_per_s", "cache_reload_seconds", "bytes", "nnz", "cpu"):
        assert key in res
    assert res["points"] == len(read_xc(tmp_path / "b" / "train.txt"))
    proc = slide_cmd("bench", "--like", "amazon-670k", "--scale", "0.002", "--dir", tmp_path / "b",
                     "--repeat", "1")
    assert json.loads(proc.stdout)["synth_seconds"] is None  # reused


def test_list():
    proc = slide_cmd("list")
    assert proc.returncode == 0
    assert {"bibtex", "delicious-200k", "amazon-670k"} <= set(json.loads(proc.stdout))


# ----------------------------------------------------------------------------- issue 10: bad inputs


def test_folder_and_fifo_as_data_file_say_what_they_are(tmp_path):
    """Issue 10 item 16: a folder or FIFO given as a data file said "no such file"."""
    folder = tmp_path / "dir.txt"
    folder.mkdir()
    proc = slide_cmd("stats", folder, cache_dir=tmp_path / "c")
    assert_one_line_error(proc, f"{folder}: is a directory, not a data file")
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    proc = slide_cmd("stats", fifo, cache_dir=tmp_path / "c")  # must not hang reading it
    assert_one_line_error(proc, f"{fifo}: is a FIFO (named pipe), not a data file")
    d = tmp_path / "ds"
    write_pair(d)
    proc = slide_cmd("prepare", "--train", d / "train.txt", "--test", folder, cache_dir=tmp_path / "c")
    assert_one_line_error(proc, f"{folder}: is a directory, not a data file")
    assert sorted(p.name for p in d.iterdir()) == ["test.txt", "train.txt"]
    proc = slide_cmd("stats", d / "train.txt", "--split", fifo, cache_dir=tmp_path / "c")
    assert_one_line_error(proc, f"{fifo}: is a FIFO (named pipe), not a split file")


def test_unreadable_data_or_split_file_is_one_line(tmp_path, monkeypatch, capsys):
    """Issue 10 item 14: an unreadable data or split file gave a PermissionError traceback."""
    import slide.io as io_mod
    from slide.data.commands import main

    d = tmp_path / "ds"
    write_pair(d)
    split = d / "split.txt"
    split.write_text("1\n2\n")
    denied = {str(d / "test.txt"), str(split)}
    if os.geteuid() != 0:
        for p in denied:
            os.chmod(p, 0)
    else:  # root reads anything: make the open fail as it would for a user
        real_open = os.open

        def deny(path, *args, **kwargs):
            if str(path) in denied:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(io_mod.os, "open", deny)
    monkeypatch.setenv("SLIDE_CACHE_DIR", str(tmp_path / "c"))
    for argv, bad in ((["stats", str(d / "test.txt"), "--no-cache"], d / "test.txt"),
                      (["stats", str(d / "test.txt")], d / "test.txt"),
                      (["stats", str(d / "train.txt"), "--split", str(split)], split),
                      (["prepare", "--train", str(d / "train.txt"), "--test", str(d / "test.txt")],
                       d / "test.txt")):
        capsys.readouterr()
        assert main(["data", *argv]) == 2
        out = capsys.readouterr()
        assert out.out == "" and out.err == f"slide: error: {bad}: permission denied (cannot read it)\n", argv


def test_prepare_refuses_a_zero_point_test_set(tmp_path):
    """Issue 10 item 15: a 0-point train or test set was accepted."""
    d = tmp_path / "ds"
    write_pair(d)
    (d / "test.txt").write_text("0 6 4\r\n")
    proc = slide_cmd("prepare", "--train", d / "train.txt", "--test", d / "test.txt", cache_dir=tmp_path / "c")
    assert_one_line_error(proc, f"{d / 'test.txt'}: the test set has 0 points")
    assert sorted(p.name for p in d.iterdir()) == ["test.txt", "train.txt"]


def test_blank_line_in_data_file_is_refused_by_the_cli(tmp_path):
    """Issue 10 item 15: `3 5 3` with a blank second record loaded as 3 points."""
    bad = tmp_path / "blank.txt"
    bad.write_bytes(b"3 5 3\r\n0 1:1\r\n\r\n1 2:1\r\n2 3:1\r\n")
    proc = slide_cmd("stats", bad, cache_dir=tmp_path / "c")
    assert_one_line_error(proc, f"{bad}:3: empty line where record 2 of 3 should be")


def test_tampered_cache_warns_and_the_command_still_answers(tmp_path):
    """Issue 10 item 3: the CLI reparses a damaged cache, with one warning line naming it."""
    d = tmp_path / "ds"
    write_pair(d)
    assert slide_cmd("stats", d / "train.txt", cache_dir=tmp_path / "c").returncode == 0
    cache = d / "train.txt.cache.npz"
    with np.load(cache, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x_indices"] = arrays["x_indices"] + 1000
    np.savez(cache, **arrays)
    proc = slide_cmd("stats", d / "train.txt", cache_dir=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["points"] == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"slide: warning: {cache}: damaged cache"), lines
