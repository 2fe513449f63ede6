"""Issue 10, pipeline items: curves with repeated steps (2), tables that follow the run files (11)
and training jobs that die with the workflow (13).

The fast tests check the aggregate and the launcher alone; the slow ones run a one-dataset,
one-method pipeline (the `tiny` preset cut down) for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from slide.report.aggregate import (drop_stale_manifest, manifest_is_stale, monotonic_curve, write_manifest,
                                    _read_curve_or_none)
from slide.runs import CURVE_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


# ----------------------------------------------------------------------------- item 2


def _curve(steps):
    rows = [dict(step=s, epoch=s / 100, samples=s * 8, train_seconds=i * 1.0, wall_seconds=i * 1.5,
                 cpu_seconds=i * 2.0, loss=1.0 / (i + 1), p_at_1=0.1, p_at_3=0.1, p_at_5=0.1, eval_points=64)
            for i, s in enumerate(steps)]
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def test_resumed_curve_with_repeated_steps_is_deduplicated_loudly(tmp_path, capsys):
    # checkpoint at 153, rows written up to 220 before the kill, then the resumed run from 153
    steps = [20, 40, 60, 80, 100, 120, 140, 153, 160, 180, 200, 220, 160, 180, 200, 220, 240]
    path = tmp_path / "curve.csv"
    _curve(steps).to_csv(path, index=False)
    notes = []
    curve = _read_curve_or_none(path, notes)
    assert curve["step"].tolist() == [20, 40, 60, 80, 100, 120, 140, 153, 160, 180, 200, 220, 240]
    assert curve["step"].is_monotonic_increasing and curve["step"].is_unique
    # the rows kept at a repeated step are the later ones (the run that finished)
    assert curve.loc[curve["step"] == 160, "wall_seconds"].item() == 12 * 1.5
    assert curve["wall_seconds"].is_monotonic_increasing
    assert len(notes) == 1 and str(path) in notes[0] and "dropped 4 of 17" in notes[0]
    assert "not increasing" in capsys.readouterr().err


def test_increasing_curve_is_untouched(capsys):
    curve = _curve([4, 8, 12])
    notes = []
    assert monotonic_curve(curve, "c.csv", notes) is curve
    assert notes == [] and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- item 11


def test_manifest_notices_a_run_file_gone_or_changed(tmp_path):
    run = tmp_path / "results" / "d" / "slide" / "seed0" / "run.json"
    run.parent.mkdir(parents=True)
    run.write_text("{}")
    (run.parent / "curve.csv").write_text("step\n1\n")
    manifest = tmp_path / "results" / "p" / "aggregate_inputs.json"
    write_manifest(manifest, [run])
    assert manifest_is_stale(manifest) is None
    assert drop_stale_manifest(manifest) is None and manifest.exists()
    os.utime(run, ns=(run.stat().st_atime_ns, run.stat().st_mtime_ns + 10**9))
    assert "1 changed" in manifest_is_stale(manifest)
    write_manifest(manifest, [run])
    run.unlink()
    why = drop_stale_manifest(manifest)
    assert "1 gone" in why and str(run) in why
    assert not manifest.exists()
    assert manifest_is_stale(manifest) is None  # nothing recorded: nothing to compare


# ----------------------------------------------------------------------------- item 13

TRAINER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"


def _gone(pid: int, within: float) -> bool:
    end = time.time() + within
    while time.time() < end:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":  # a zombie waiting for its (dead) parent's reaper is gone for our purpose
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


def _wait_for(path: Path, within: float = 60.0) -> int:
    end = time.time() + within
    while time.time() < end:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.1)
    raise AssertionError(f"{path} never written")


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _fake_workflow(job: str) -> subprocess.Popen:
    """A stand-in for Snakemake: exports its pid as SLIDE_WORKFLOW_PID and runs ``job`` in bash."""
    workflow = textwrap.dedent(f"""
        import os, subprocess, time
        os.environ["SLIDE_WORKFLOW_PID"] = str(os.getpid())
        subprocess.Popen(["/bin/bash", "-c", {job!r}])
        time.sleep(600)
    """)
    return subprocess.Popen([sys.executable, "-c", workflow], cwd=REPO)


@contextlib.contextmanager
def _under_fake_workflow(job: str, pidfile: Path):
    """Start ``job`` under :func:`_fake_workflow`; yield (workflow, pid the job wrote to ``pidfile``);
    afterwards kill both, whatever the test did."""
    parent = _fake_workflow(job)
    pid = None
    try:
        pid = _wait_for(pidfile)
        yield parent, pid
    finally:
        parent.kill()
        if pid:
            _kill(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_trainer_dies_when_the_workflow_is_killed(tmp_path):
    """workflow (SIGKILLed) -> job shell -> launcher -> trainer: the trainer is gone within seconds."""
    pidfile, launcher_pid = tmp_path / "trainer.pid", tmp_path / "launcher.pid"
    out = tmp_path / "run"
    job = (f"echo $$ > /dev/null; {sys.executable} -m slide.report.launch --out {out} -- "
           f"{sys.executable} -c \"{TRAINER}\" {pidfile} > {tmp_path / 'job.log'} 2>&1")
    with _under_fake_workflow(job, pidfile) as (parent, trainer):
        launcher = int(Path(f"/proc/{trainer}/stat").read_text().rsplit(")", 1)[1].split()[1])
        launcher_pid.write_text(str(launcher))
        parent.kill()
        parent.wait()
        assert _gone(trainer, 5.0), "the trainer outlived the workflow"
        assert _gone(launcher, 5.0), "the launcher outlived the workflow"
        assert "the workflow is gone" in (tmp_path / "job.log").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_a_supervised_benchmark_dies_with_the_workflow(tmp_path):
    """Benchmark jobs run under the launcher without --out: supervised only, and gone with the workflow."""
    pidfile = tmp_path / "bench.pid"
    job = (f"{sys.executable} -m slide.report.launch -- {sys.executable} -c \"{TRAINER}\" {pidfile} "
           f"> {tmp_path / 'job.log'} 2>&1")
    with _under_fake_workflow(job, pidfile) as (parent, bench):
        parent.kill()
        parent.wait()
        assert _gone(bench, 5.0), "the benchmark outlived the workflow"
        assert not list(tmp_path.glob("*/command.json"))  # no run directory was prepared


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_trainer_dies_with_a_killed_launcher(tmp_path):
    pidfile = tmp_path / "trainer.pid"
    launcher = subprocess.Popen([sys.executable, "-m", "slide.report.launch", "--out", str(tmp_path / "run"), "--",
                                 sys.executable, "-c", TRAINER, str(pidfile)], cwd=REPO,
                                env=dict(os.environ, SLIDE_WORKFLOW_PID=""))
    trainer = None
    try:
        trainer = _wait_for(pidfile)
        launcher.kill()
        launcher.wait()
        assert _gone(trainer, 5.0), "the trainer outlived its launcher"
    finally:
        launcher.kill()
        if trainer:
            _kill(trainer)


def test_sigterm_to_the_launcher_stops_the_trainer(tmp_path):
    pidfile = tmp_path / "trainer.pid"
    launcher = subprocess.Popen([sys.executable, "-m", "slide.report.launch", "--out", str(tmp_path / "run"), "--",
                                 sys.executable, "-c", TRAINER, str(pidfile)], cwd=REPO,
                                env=dict(os.environ, SLIDE_WORKFLOW_PID=""))
    trainer = None
    try:
        trainer = _wait_for(pidfile)
        launcher.terminate()
        assert launcher.wait(timeout=10) == 128 + signal.SIGTERM
        assert _gone(trainer, 5.0)
        assert json.loads((tmp_path / "run" / "command.json").read_text())["finished"] is False
    finally:
        launcher.kill()
        if trainer:
            _kill(trainer)


# ----------------------------------------------------------------------------- a small real pipeline

SMALL_DATASETS = "datasets={'amazon-670k': {'enabled': False}%s}"
SMALL = [
    "preset=tiny",
    "methods={'tf-full-cpu': {'enabled': False}, 'tf-sampled-cpu': {'enabled': False}}",
    "experiments={'sampled_softmax': {'enabled': False}, 'batch_size': {'enabled': False}, "
    "'thread_scaling': {'enabled': False}}",
]
RUN = Path("results/delicious-200k-synth0.005/slide/seed0/run.json")


def small_snakemake(workdir, *args, delicious="", timeout=600, wait=True):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args,
           "--config", *SMALL, SMALL_DATASETS % (f", 'delicious-200k': {delicious}" if delicious else "")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not wait:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_pipeline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("small")
    res = small_snakemake(workdir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return workdir


@pytest.mark.slow
def test_tables_follow_a_deleted_run_json(small_pipeline):
    workdir = small_pipeline
    summary = workdir / "results" / "tiny" / "summary.csv"
    res = small_snakemake(workdir, "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
    before = pd.read_csv(summary)
    old_wall = before.loc[before["method"] == "slide", "wall_seconds"].item()
    # deleted by hand, or removed by a --forcerun that was then killed
    (workdir / RUN).unlink()
    res = small_snakemake(workdir, "-n")
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Nothing to be done" not in out, out[-3000:]
    assert "rule train:" in res.stdout and "rule aggregate:" in res.stdout and "rule report_html:" in res.stdout
    res = small_snakemake(workdir)
    assert res.returncode == 0, res.stderr[-4000:]
    after = pd.read_csv(summary)
    new_wall = after.loc[after["method"] == "slide", "wall_seconds"].item()
    run = json.loads((workdir / RUN).read_text())
    assert new_wall == pytest.approx(run["wall_seconds"], rel=1e-5) and new_wall != old_wall
    res = small_snakemake(workdir, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_sigkill_to_snakemake_kills_the_training_job(small_pipeline):
    workdir = small_pipeline
    long = "{'epochs': 100000, 'max_steps': None, 'max_train_seconds': 600}"  # runs until killed
    log = workdir / "logs" / "train" / "delicious-200k-synth0.005" / "slide" / "seed0.log"
    log.unlink(missing_ok=True)
    proc = small_snakemake(workdir, str(RUN), "--forcerun", str(RUN), delicious=long, wait=False)
    trainer = None
    try:
        end = time.time() + 120
        while time.time() < end and trainer is None:
            text = log.read_text() if log.is_file() else ""
            if "launch: " in text:
                trainer = _trainer_in(workdir)
            time.sleep(0.2)
        assert trainer is not None, "the training job did not start"
        time.sleep(1.0)
        assert not _gone(trainer, 0.1), "the trainer ended before the test killed the workflow"
        launcher = int(Path(f"/proc/{trainer}/stat").read_text().rsplit(")", 1)[1].split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _gone(trainer, 5.0), "the training job outlived Snakemake"
        assert _gone(launcher, 5.0), "the launcher outlived Snakemake"
    finally:
        proc.kill()
        if trainer:
            _kill(trainer)


def _trainer_in(workdir: Path) -> int | None:
    """The pid of a `slide.cli train` process working in ``workdir``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if args[1:4] == [b"-m", b"slide.cli", b"train"] and os.readlink(proc / "cwd") == str(workdir):
                return int(proc.name)
        except OSError:
            continue
    return None


# ----------------------------------------------------------------------------- allocator settings

def test_child_env_adds_the_allocator_settings_and_keeps_the_users():
    from slide.settings import GLIBC_TUNABLE, child_env

    env = child_env({"PATH": "/bin"})
    assert env["TF_CPU_ALLOCATOR_USE_BFC"] == "true" and env["GLIBC_TUNABLES"] == GLIBC_TUNABLE
    env = child_env({"TF_CPU_ALLOCATOR_USE_BFC": "false", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["TF_CPU_ALLOCATOR_USE_BFC"] == "false"
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{GLIBC_TUNABLE}"
    mine = "glibc.malloc.hugetlb=0"
    assert child_env({"GLIBC_TUNABLES": mine})["GLIBC_TUNABLES"] == mine


def test_the_launcher_gives_the_trainer_the_allocator_settings(tmp_path):
    out = tmp_path / "env.json"
    show = f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPU_ALLOCATOR_USE_BFC", "GLIBC_TUNABLES")}
    proc = subprocess.run([sys.executable, "-m", "slide.report.launch", "--", sys.executable, "-c", show],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert seen["TF_CPU_ALLOCATOR_USE_BFC"] == "true"
    assert "glibc.malloc.hugetlb=1" in seen["GLIBC_TUNABLES"]
