"""The Snakemake workflow: lint, formatting, the config schema, and dry runs of every preset.

Dry runs build the whole DAG without running a job, in a temporary working directory (so no
real data and no earlier results are visible): the `paper` preset must list the fetch and train
jobs of both paper datasets although their files are absent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
SNAKEFMT = str(BIN / "snakefmt")
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
PRESETS = sorted(p.stem for p in (REPO / "workflow" / "config" / "presets").glob("*.yaml"))


def snakemake(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def dry_run(tmp_path, *config, extra=()):
    args = ["-n", "-p", "--cores", "2", "--directory", str(tmp_path), *extra]
    if config:
        args += ["--config", *config]
    return snakemake(*args, cwd=tmp_path)


def test_snakemake_lint_passes():
    res = snakemake("--lint", "--cores", "1")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Lints for" not in out, out[-4000:]


def test_snakefmt_check_passes():
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    res = subprocess.run([SNAKEFMT, "--check", *files], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def _resolve(node):
    ref = node.get("$ref")
    if ref:
        target = SCHEMA
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _walk(node, path="config"):
    node = _resolve(node)
    if node.get("type") == "object" or "properties" in node:
        assert node.get("additionalProperties") is False, f"{path}: additionalProperties must be false"
        for key, sub in node.get("properties", {}).items():
            full = _resolve(sub)
            assert full.get("description"), f"{path}.{key}: no description"
            assert "default" in sub or "default" in full, f"{path}.{key}: no default"
            yield f"{path}.{key}"
            yield from _walk(sub, f"{path}.{key}")
    items = node.get("items")
    if isinstance(items, dict):
        yield from _walk(items, f"{path}[]")


def test_schema_every_key_described_defaulted_and_closed():
    keys = list(_walk(SCHEMA))
    assert "config.datasets.amazon-670k.max_train_seconds" in keys
    assert "config.experiments.thread_scaling.threads" in keys
    assert SCHEMA["properties"]["preset"]["enum"] == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_validates_and_dry_runs(tmp_path, preset):
    res = dry_run(tmp_path, f"preset={preset}")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "rule all" in res.stdout or "Nothing to be done" in res.stdout


def test_paper_dry_run_lists_fetch_and_train_for_both_datasets(tmp_path):
    res = dry_run(tmp_path, "preset=paper")
    out = res.stdout
    assert res.returncode == 0, (out + res.stderr)[-4000:]
    for name in ("delicious-200k", "amazon-670k"):
        assert re.search(rf"rule fetch:\n\s+output: data/raw/{name}/\.verified", out), name
        for method in ("slide", "tf-full-cpu", "tf-sampled-cpu"):
            assert f"results/{name}/{method}/seed0/run.json" in out, (name, method)
        assert f"data/prepared/{name}.json" in out
    # train jobs resume a killed run and record a diverged one as failed
    commands = [line for line in out.splitlines() if "slide.cli train" in line]
    assert commands and all("--resume" in c and "--keep-going" in c for c in commands)
    # every timed job takes all the cores given to Snakemake and the exclusive slot
    assert re.search(r"rule train:.*?threads: 2.*?timed_slot=1", out, re.S)
    # no GPU here: the TF-GPU runs are left out with a message, the DAG still builds
    if "no GPU" in res.stderr:
        assert "tf-full-gpu/seed0/run.json" not in out


def test_synthetic_default_lists_the_pipeline_stages(tmp_path):
    res = dry_run(tmp_path)
    out = res.stdout
    assert res.returncode == 0, (out + res.stderr)[-4000:]
    for rule in ("synth", "prepare", "train", "skipped", "aggregate", "plot", "report_html"):
        assert re.search(rf"^rule {rule}:", out, re.M), rule
    assert "reports/default/report.html" in out and "results/default/summary.csv" in out
    assert re.search(r"benchmark: benchmarks/\S+/slide/seed0\.tsv", out)
    assert "log: logs/train/" in out


@pytest.mark.parametrize("setting, key", [
    ("threads=-1", "threads"),
    ("gpu=maybe", "gpu"),
    ("not_a_key=1", "not_a_key"),
    ("datasets={'amazon-670k': {'scale': 9}}", "scale"),
    ("datasets={'amazon-670k': {'epocs': 2}}", "epocs"),
    ("experiments={'batch_size': {'sizes': [0]}}", "sizes"),
    ("preset=nope", "preset"),
])
def test_config_errors_name_the_key(tmp_path, setting, key):
    res = dry_run(tmp_path, setting)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert key in out, out[-3000:]
    assert "rule all" not in res.stdout


def test_missing_real_data_with_fetch_never_is_left_out(tmp_path):
    res = dry_run(tmp_path, "preset=paper", "datasets={'amazon-670k': {'fetch': 'never'}}", "gpu=no")
    out = res.stdout
    assert res.returncode == 0, (out + res.stderr)[-4000:]
    assert "leaving out amazon-670k" in res.stderr
    assert "results/amazon-670k/" not in out and "results/delicious-200k/slide/seed0/run.json" in out
    assert "rule skipped" in out  # results/skipped.json lists them for the report


def test_earlier_failed_fetch_leaves_the_dataset_out(tmp_path):
    failed = tmp_path / "data" / "raw" / "delicious-200k" / "FETCH_FAILED"
    failed.parent.mkdir(parents=True)
    failed.write_text("slide: error: download failed: offline\n")
    res = dry_run(tmp_path, "preset=paper", "gpu=no")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "download failed: offline" in res.stderr
    assert "results/delicious-200k/" not in res.stdout
    assert re.search(r"rule fetch:\n\s+output: data/raw/amazon-670k/\.verified", res.stdout)


@pytest.mark.parametrize("setting", [
    "datasets={'amazon-670k': {'epocs': 2}}",
    "not_a_key=1",
    "experiments={'batch_size': {'sizes': [0]}}",
])
def test_config_error_is_one_line_not_a_schema_dump(tmp_path, setting):
    res = dry_run(tmp_path, setting)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "Failed validating" not in out and "On instance" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("config key '")]
    assert len(errors) == 1, out[-3000:]
    assert len(out.splitlines()) < 12, out[-3000:]


def test_misspelt_key_is_named_with_a_suggestion(tmp_path):
    res = dry_run(tmp_path, "datasets={'amazon-670k': {'epocs': 2}}")
    assert "config key 'datasets.amazon-670k.epocs': unknown key (did you mean 'epochs'?)" in res.stdout + res.stderr


@pytest.mark.parametrize("setting, expect", [
    ("methods={'slide': {'set': ['K=0']}}", "K must be an integer >= 1, got 0"),
    ("methods={'slide': {'set': ['hash=md5']}}", "hash must be one of"),
    ("methods={'slide': {'set': ['output_sparsity=1.5']}}", "output_sparsity must be in"),
    ("methods={'tf-full-cpu': {'set': ['K=3']}}", "unknown key 'K'"),
    ("methods={'tf-sampled-cpu': {'set': ['sample_fraction=0']}}", "sample_fraction must be in (0, 1]"),
    ("methods={'tf-sampled-cpu': {'set': ['num_sampled=100000']}}", "must be smaller than the"),
    ("overrides=[{'set': ['lr=-1'], 'methods': ['tf-full-cpu']}]", "lr must be positive"),
    ("overrides=[{'set': ['batch_size=0'], 'methods': ['slide']}]", "batch_size must be an integer >= 1"),
])
def test_invalid_trainer_override_fails_when_the_workflow_is_parsed(tmp_path, setting, expect):
    """A bad --set value in a preset or --config is refused before any job runs, naming the key."""
    res = dry_run(tmp_path, "preset=tiny", setting)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "rule all" not in res.stdout
    assert expect in out, out[-3000:]
    assert "invalid trainer setting for" in out
    assert len(out.splitlines()) < 15, out[-3000:]


def test_valid_trainer_overrides_still_dry_run(tmp_path):
    res = dry_run(tmp_path, "preset=tiny", "methods={'slide': {'set': ['K=3', 'hash=dwta']}}",
                  "overrides=[{'set': ['lr=0.01', 'hidden=[64]']}]")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "--set K=3 --set hash=dwta --set lr=0.01" in res.stdout


def test_default_profile_runs_timed_jobs_one_at_a_time(tmp_path):
    """workflow/profiles/default limits timed_slot to 1 (the Snakefile applies the same limit when no
    profile or --resources gave one); every timed job requests the whole slot."""
    profile = REPO / "workflow" / "profiles" / "default"
    assert "timed_slot=1" in yaml.safe_load((profile / "config.yaml").read_text())["resources"]
    res = dry_run(tmp_path, "preset=tiny", extra=("--workflow-profile", str(profile)))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "workflow specific profile" in res.stdout + res.stderr
    for rule in ("train", "train_variant", "bench_threads"):
        assert re.search(rf"rule {rule}:.*?timed_slot=1", res.stdout, re.S), rule
