"""The whole Snakemake pipeline on the `tiny` preset, and the run launcher's resume rules.

The slow test runs every rule (synthetic data -> prepare -> train SLIDE / TF-CPU full and sampled
softmax, experiment variants and thread-scaling benchmarks -> aggregate -> plot -> report) in a
temporary working directory, then checks that every output Snakemake declares exists and parses,
that a second run has nothing to do, that a killed run resumes from its checkpoint and that a
forced rerun starts afresh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from slide.report.aggregate import SUMMARY_COLUMNS
from slide.report.launch import fingerprint, main as launch_main, prepare_dir
from slide.runs import CURVE_COLUMNS, load_run, read_curve

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


# ----------------------------------------------------------------------------- launcher


def test_fingerprint_ignores_how_a_run_is_run():
    a = ["/x/bin/python", "-m", "slide.cli", "train", "--out", "d", "--threads", "2", "--resume", "--keep-going"]
    b = ["/y/python", "-m", "slide.cli", "train", "--out", "d", "--threads", "8"]
    assert fingerprint(a) == fingerprint(b) == ["-m", "slide.cli", "train", "--out", "d"]
    assert fingerprint(a) != fingerprint(a[:-4] + ["--set", "lr=0.1"])


def _state(d: Path):
    for name in ("model.npz", "curve.csv"):
        (d / name).write_text("x")


def test_launcher_resumes_only_an_unfinished_run_of_the_same_command(tmp_path):
    cmd = ["python", "-m", "slide.cli", "train", "--out", str(tmp_path)]
    assert prepare_dir(tmp_path, cmd) == "fresh start"
    _state(tmp_path)  # the job was killed: checkpoint and curve, no run.json, not finished
    assert "resuming" in prepare_dir(tmp_path, cmd)
    assert (tmp_path / "model.npz").exists() and (tmp_path / "curve.csv").exists()
    # a different command (configuration changed): the old state must not be resumed
    assert "command changed" in prepare_dir(tmp_path, cmd + ["--set", "lr=0.1"])
    assert not (tmp_path / "model.npz").exists() and not (tmp_path / "curve.csv").exists()


def test_launcher_starts_a_finished_run_afresh(tmp_path):
    script = ("import sys, pathlib; d = pathlib.Path(sys.argv[1]); (d / 'model.npz').write_text('m'); "
              "(d / 'curve.csv').write_text('c'); (d / 'run.json').write_text('{}')")
    cmd = [sys.executable, "-c", script, str(tmp_path)]
    assert launch_main(["--out", str(tmp_path), "--", *cmd]) == 0
    assert json.loads((tmp_path / "command.json").read_text())["finished"] is True
    (tmp_path / "run.json").unlink()  # Snakemake removes the output before a forced rerun
    assert "finished run is rerun" in prepare_dir(tmp_path, cmd)
    assert not (tmp_path / "model.npz").exists()


def test_launcher_fails_when_the_trainer_writes_no_record(tmp_path):
    assert launch_main(["--out", str(tmp_path), "--", sys.executable, "-c", "pass"]) == 1
    assert launch_main(["--out", str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3


# ----------------------------------------------------------------------------- whole pipeline


def run_snakemake(workdir, *args, timeout=600):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args,
           "--config", "preset=tiny"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def declared_outputs(workdir):
    res = run_snakemake(workdir, "--summary")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line.split("\t") for line in res.stdout.splitlines() if "\t" in line]
    assert lines[0][0] == "output_file"
    return [Path(workdir) / row[0] for row in lines[1:]]


def check_output(path: Path):
    assert path.is_file(), f"declared output missing: {path}"
    assert path.stat().st_size > 0, f"empty: {path}"
    suffix = path.suffix
    if suffix == ".csv":
        pd.read_csv(path)
    elif suffix == ".json":
        json.loads(path.read_text())
    elif suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    elif suffix == ".svg":
        assert ET.parse(path).getroot().tag.endswith("svg")
    elif suffix == ".html":
        assert path.read_text().rstrip().endswith("</html>")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    res = run_snakemake(workdir)
    assert res.returncode == 0, (res.stdout[-3000:] + res.stderr[-6000:])
    return workdir, res


@pytest.mark.slow
def test_tiny_pipeline_outputs(tiny_pipeline):
    workdir, res = tiny_pipeline
    outputs = declared_outputs(workdir)
    assert len(outputs) > 30
    for path in outputs:
        check_output(path)
    results = workdir / "results"
    # one run.json per training run, valid against the schema, with its curve
    runs = sorted(results.glob("**/run.json"))
    tables = results / "tiny"
    summary = pd.read_csv(tables / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == len(runs) >= 6
    for run in runs:
        record = load_run(run)
        assert record["status"] in ("completed", "failed")
        assert tuple(read_curve(run.parent / "curve.csv").columns) == CURVE_COLUMNS
    methods = set(summary["method"])
    assert {"slide", "tf-full-cpu", "tf-sampled-cpu"} <= methods
    assert {"bs64", "bs256", "frac0.01", "frac0.05"} <= set(summary["variant"].dropna())
    # the headline runs keep the results/<dataset>/<method>/seed<seed>/ form
    assert (results / "delicious-200k-synth0.005" / "slide" / "seed0" / "run.json").is_file()
    benches = sorted(results.glob("**/bench.json"))
    assert len(benches) == 2
    for b in benches:
        assert {"median_batch_seconds", "threads", "method"} <= set(json.loads(b.read_text()))
    plan = json.loads((tables / "skipped.json").read_text())
    assert {"skipped", "datasets", "gpu", "cores"} <= set(plan)
    # figures: PNG and SVG of each; the report embeds every one
    figures = sorted((workdir / "reports" / "tiny" / "figures").glob("*.png"))
    names = {p.stem for p in figures}
    assert {"p1_vs_time", "p1_vs_iterations", "sampled_softmax", "batch_size", "thread_scaling",
            "headline", "jobs"} <= names
    html = (workdir / "reports" / "tiny" / "report.html").read_text()
    for name in names:
        assert f'alt="{name}"' in html, name
    assert "Verdict" in html and "Machine and software" in html
    # one log per job and a benchmark record per timed job
    assert len(list((workdir / "logs" / "train").glob("**/*.log"))) == len(runs)
    assert len(list((workdir / "benchmarks").glob("**/*.tsv"))) == len(runs) + len(benches)
    jobs = pd.read_csv(tables / "jobs.csv")
    assert len(jobs) == len(runs) + len(benches)
    # no temporary files left behind
    assert not [p for p in workdir.glob("results/**/*") if p.name.startswith(".") and ".tmp" in p.name]


@pytest.mark.slow
def test_tiny_pipeline_rerun_resume_and_forcerun(tiny_pipeline):
    workdir, _ = tiny_pipeline
    res = run_snakemake(workdir, "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stdout[-2000:]
    run_dir = workdir / "results" / "amazon-670k-synth0.005" / "tf-full-cpu" / "seed0"
    target = str(run_dir.relative_to(workdir) / "run.json")
    log = workdir / "logs" / "train" / "amazon-670k-synth0.005" / "tf-full-cpu" / "seed0.log"
    # a killed job: no run.json, the checkpoint and curve are there, the launcher had not finished
    record = json.loads((run_dir / "command.json").read_text())
    record["finished"] = False
    (run_dir / "command.json").write_text(json.dumps(record))
    (run_dir / "run.json").unlink()
    res = run_snakemake(workdir, target)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "resuming an unfinished run" in log.read_text()
    assert load_run(run_dir / "run.json")["status"] == "completed"
    # a forced rerun of one baseline starts afresh
    res = run_snakemake(workdir, target, "--forcerun", target)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "finished run is rerun" in log.read_text()
    assert load_run(run_dir / "run.json")["status"] == "completed"


@pytest.mark.slow
def test_snakemake_report_zip(tiny_pipeline):
    import zipfile

    workdir, _ = tiny_pipeline
    res = run_snakemake(workdir, "--report", "reports/snakemake-report.zip")
    assert res.returncode == 0, res.stderr[-4000:]
    with zipfile.ZipFile(workdir / "reports" / "snakemake-report.zip") as z:
        names = z.namelist()
    assert any(n.endswith("/report.html") for n in names)
    assert sum(n.endswith(".png") for n in names) >= 7  # every figure, with its caption


@pytest.mark.slow
def test_a_gpu_run_copied_in_from_another_machine_is_reported_not_rerun(tiny_pipeline):
    """A torch-full-gpu run made on a GPU box (gpu_bench.sh) and copied into results/ on a machine
    without a GPU: the pipeline reads it into the tables and the report, and plans no job for it."""
    workdir, _ = tiny_pipeline
    ds = workdir / "results" / "amazon-670k-synth0.005"
    made = ds / "torch-full-gpu" / "seed0"
    made.mkdir(parents=True)
    (made / "curve.csv").write_bytes((ds / "tf-full-cpu" / "seed0" / "curve.csv").read_bytes())
    rec = json.loads((ds / "tf-full-cpu" / "seed0" / "run.json").read_text())
    rec.update(method="torch-full-gpu", machine=dict(rec["machine"], cpu="Box CPU", cores=96),
               method_stats={"device": "cuda:0 Box GPU 80 GiB"})
    (made / "run.json").write_text(json.dumps(rec))
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           "--config", "preset=tiny", "methods={torch-full-gpu: {enabled: true}}"]
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "importing 1 run(s)" in res.stderr
    assert not (workdir / "logs" / "train" / "amazon-670k-synth0.005" / "torch-full-gpu").exists()
    assert not (workdir / "benchmarks" / "amazon-670k-synth0.005" / "torch-full-gpu").exists()
    summary = pd.read_csv(workdir / "results" / "tiny" / "summary.csv").set_index("method")
    assert summary.loc["torch-full-gpu", "gpu"] == "cuda:0 Box GPU 80 GiB"
    plan = json.loads((workdir / "results" / "tiny" / "skipped.json").read_text())
    assert [i["method"] for i in plan["imported"]] == ["torch-full-gpu"]
    html = (workdir / "reports" / "tiny" / "report.html").read_text()
    assert "made on another machine" in html and "cuda:0 Box GPU 80 GiB (CPU Box CPU, 96 cores)" in html
