"""The workflow's plan and command lines (slide/pipeline/), without running Snakemake.

The configuration is a preset with the schema's defaults filled in, as the Snakefile builds it.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from slide.compare import METHOD_COMMANDS
from slide.pipeline import commands
from slide.pipeline.methods import GPU_METHODS, METHODS, TORCH_METHODS, method_argv, method_command
from slide.pipeline.plan import dataset_id, gpu_status, make_plan, run_dir, thread_counts, torch_status

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
NO_GPU = (False, "no GPU: nvidia-smi not found")
NO_TORCH = (False, "PyTorch not installed (pip install -e \".[torch]\")")


def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_for(preset="tiny", **over):
    cfg = yaml.safe_load((REPO / "workflow" / "config" / "presets" / f"{preset}.yaml").read_text())
    cfg = _merge(cfg, over)
    cfg["preset"] = preset
    validate(cfg, str(SCHEMA))  # fills in the defaults
    return cfg


def plan_for(preset="tiny", cores=2, gpu=NO_GPU, torch=NO_TORCH, **over):
    return make_plan(config_for(preset, **over), cores, gpu=gpu, torch=torch)


# ----------------------------------------------------------------------------- methods


def test_one_table_feeds_the_pipeline_and_compare():
    assert METHOD_COMMANDS == {m: method_argv(m, "bench") for m in METHODS}
    assert method_command("slide", "train") == "python -m slide.cli train"
    assert method_command("tf-sampled-gpu", "train") == "python -m baselines.tf train --loss sampled --device gpu"
    assert method_command("torch-full-cpu", "bench") == "python -m baselines.torch bench --loss full --device cpu"
    assert set(GPU_METHODS) == {"tf-full-gpu", "tf-sampled-gpu", "torch-full-gpu", "torch-sampled-gpu"}
    assert set(TORCH_METHODS) == {"torch-full-cpu", "torch-sampled-cpu", "torch-full-gpu", "torch-sampled-gpu"}


def test_schema_knows_every_method_and_presets_leave_torch_off():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["$defs"]["method_names"]["enum"]) == set(METHODS)
    assert set(schema["properties"]["methods"]["properties"]) == set(METHODS)
    for path in (REPO / "workflow" / "config" / "presets").glob("*.yaml"):
        methods = yaml.safe_load(path.read_text())["methods"]
        assert set(methods) == set(METHODS), path.name
        assert not any(methods[m]["enabled"] for m in TORCH_METHODS), path.name


# ----------------------------------------------------------------------------- GPU and PyTorch


def _smi(stdout, rc=0):
    return lambda *a, **k: subprocess.CompletedProcess(a, rc, stdout=stdout, stderr="")


def test_gpu_status_asks_nvidia_smi_only():
    assert gpu_status("yes") == (True, "assumed present (config gpu: yes)")
    assert gpu_status("no") == (False, "GPU runs switched off (config gpu: no)")
    assert gpu_status("auto", which=lambda _: None) == NO_GPU
    assert gpu_status("auto", which=lambda _: "/x/nvidia-smi", run=_smi("")) == (
        False, "no GPU: nvidia-smi lists none")
    ok, why = gpu_status("auto", which=lambda _: "/x/nvidia-smi", run=_smi("GPU 0: NVIDIA H200 (UUID: x)\n"))
    assert ok and "nvidia-smi" in why

    def broken(*a, **k):
        raise OSError("boom")

    assert gpu_status("auto", which=lambda _: "/x/nvidia-smi", run=broken) == (
        False, "no GPU: nvidia-smi failed (boom)")


def test_torch_status_does_not_import_torch():
    assert torch_status(find_spec=lambda name: None) == NO_TORCH
    assert torch_status(find_spec=lambda name: object())[0] is True


def test_make_plan_checks_gpu_and_torch_only_when_a_method_needs_them():
    plan = make_plan(config_for("tiny"), 2)  # tiny enables no GPU and no torch method
    assert plan.gpu == (False, "no GPU method enabled")
    assert plan.torch == (False, "no PyTorch method enabled")


# ----------------------------------------------------------------------------- planning


def test_tiny_plan_runs_variants_and_benchmarks():
    plan = plan_for("tiny")
    assert set(plan.datasets) == {"amazon-670k-synth0.005", "delicious-200k-synth0.005"}
    headline = {(r["dataset"], r["method"]) for r in plan.runs if r["variant"] is None}
    assert headline == {(d, m) for d in plan.datasets for m in ("slide", "tf-full-cpu", "tf-sampled-cpu")}
    variants = {(r["dataset"], r["method"], r["variant"]) for r in plan.runs if r["variant"]}
    assert ("amazon-670k-synth0.005", "tf-sampled-cpu", "frac0.01") in variants
    assert not any(m.startswith("torch") for _, m in headline)
    assert {b["variant"] for b in plan.bench} == {"threads1", "threads2"}
    assert plan.skipped == []
    assert "results/amazon-670k-synth0.005/slide/seed0/run.json" in plan.run_jsons
    assert len(plan.job_benchmarks) == len(plan.runs) + len(plan.bench)
    assert plan.figure_names[-1] == "jobs" and "thread_scaling" in plan.figure_names


def test_gpu_runs_are_left_out_with_the_reason_without_a_gpu():
    plan = plan_for("default")
    gpu_left = [s for s in plan.skipped if s["method"] in GPU_METHODS]
    assert gpu_left and all(s["reason"] == NO_GPU[1] for s in gpu_left)
    assert not any(r["method"] in GPU_METHODS for r in plan.runs)
    assert any("leaving out GPU runs: no GPU" in n for n in plan.notes)
    with_gpu = plan_for("default", gpu=(True, "GPU listed by nvidia-smi"))
    assert any(r["method"] == "tf-full-gpu" for r in with_gpu.runs)


TORCH_ON = {m: {"enabled": True} for m in TORCH_METHODS}


def test_torch_runs_need_torch_and_gpu_ones_a_gpu():
    plan = plan_for("tiny", methods=TORCH_ON)
    torch_left = [s for s in plan.skipped if s["method"] in TORCH_METHODS]
    assert {s["method"] for s in torch_left} == set(TORCH_METHODS)
    assert all(s["reason"] == NO_TORCH[1] for s in torch_left)
    assert any("leaving out PyTorch runs" in n for n in plan.notes)

    plan = plan_for("tiny", methods=TORCH_ON, torch=(True, "PyTorch installed"))
    planned = {r["method"] for r in plan.runs}
    assert {"torch-full-cpu", "torch-sampled-cpu"} <= planned
    assert not planned & {"torch-full-gpu", "torch-sampled-gpu"}
    assert {s["reason"] for s in plan.skipped} == {NO_GPU[1]}

    plan = plan_for("tiny", methods=TORCH_ON, torch=(True, "PyTorch installed"), gpu=(True, "yes"))
    assert {"torch-full-gpu", "torch-sampled-gpu"} <= {r["method"] for r in plan.runs}
    assert plan.skipped == []


def test_a_run_that_cannot_run_here_but_was_made_elsewhere_is_imported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_for("default")
    left = next(s for s in plan.skipped if s["method"] == "tf-full-gpu")
    assert plan.imported == [] and not any("importing" in n for n in plan.notes)
    made = tmp_path / run_dir(**left) / "run.json"
    made.parent.mkdir(parents=True)
    made.write_text("{}")  # its content is the aggregate's business, not the plan's
    plan = plan_for("default")
    assert [dict(i, reason=None) for i in plan.imported] == [dict(left, reason=None)]
    assert plan.imported[0]["reason"] == NO_GPU[1]  # why it could not be made here
    assert left not in plan.skipped and not any(r["method"] == "tf-full-gpu" for r in plan.runs)
    assert plan.imported_jsons == [str(made.relative_to(tmp_path))]
    assert plan.imported_jsons[0] not in plan.run_jsons + plan.job_benchmarks  # no job makes it here
    assert any(n.startswith("importing 1 run(s)") and plan.imported_jsons[0] in n for n in plan.notes)


def test_torch_methods_join_experiments_when_asked():
    plan = plan_for("tiny", methods=TORCH_ON, torch=(True, "PyTorch installed"),
                    experiments={"sampled_softmax": {"methods": ["tf-sampled-cpu", "torch-sampled-cpu"]},
                                 "thread_scaling": {"methods": ["slide", "torch-full-cpu"]}})
    assert any(r["method"] == "torch-sampled-cpu" and r["variant"] == "frac0.01" for r in plan.runs)
    assert any(b["method"] == "torch-full-cpu" for b in plan.bench)


def test_real_data_missing_with_fetch_never_is_left_out(tmp_path):
    cfg = config_for("paper", datasets={"amazon-670k": {"fetch": "never"}})
    plan = make_plan(cfg, 2, gpu=NO_GPU, torch=NO_TORCH, data_root=str(tmp_path))
    assert "fetch is 'never'" in plan.datasets["amazon-670k"]["skip"]
    assert plan.fetch_names == {"delicious-200k"}
    assert not any(r["dataset"] == "amazon-670k" for r in plan.runs + plan.bench)
    assert any(s["dataset"] == "amazon-670k" for s in plan.skipped)
    assert any(n.startswith("leaving out amazon-670k") for n in plan.notes)


def test_earlier_failed_fetch_leaves_the_dataset_out(tmp_path):
    failed = tmp_path / "raw" / "delicious-200k" / "FETCH_FAILED"
    failed.parent.mkdir(parents=True)
    failed.write_text("slide: error: download failed: offline\n")
    plan = make_plan(config_for("paper"), 2, gpu=NO_GPU, torch=NO_TORCH, data_root=str(tmp_path))
    assert "download failed: offline" in plan.datasets["delicious-200k"]["skip"]
    assert plan.fetch_names == {"amazon-670k"}


def test_dataset_ids_and_thread_counts():
    assert dataset_id("amazon-670k", {"source": "real"}) == "amazon-670k"
    assert dataset_id("amazon-670k", {"source": "synth", "scale": 0.25, "synth_seed": 0}) == "amazon-670k-synth0.25"
    assert dataset_id("bibtex", {"source": "synth", "scale": 1, "synth_seed": 3}) == "bibtex-synth1-seed3"
    assert thread_counts({"threads": []}, 6) == [1, 2, 4, 6]
    assert thread_counts({"threads": []}, 8) == [1, 2, 4, 8]
    assert thread_counts({"threads": [4, 1]}, 8) == [1, 4]
    assert run_dir("d", "slide", None, 0) == "results/d/slide/seed0"
    assert run_dir("d", "slide", "bs64", 1) == "results/d/slide/bs64/seed1"


# ----------------------------------------------------------------------------- commands


def test_train_command_of_a_variant():
    plan = plan_for("tiny")
    cmd = commands.train_command(plan, "amazon-670k-synth0.005", "tf-sampled-cpu", "frac0.01", "0")
    assert cmd == (
        "python -m baselines.tf train --loss sampled --device cpu"
        " --train data/synth/amazon-670k-synth0.005/train.txt --test data/synth/amazon-670k-synth0.005/test.txt"
        " --out results/amazon-670k-synth0.005/tf-sampled-cpu/frac0.01/seed0 --dataset amazon-670k-synth0.005"
        " --epochs 2 --eval-points 64 --max-steps 12 --max-train-seconds 2 --seed 0 --preset amazon-670k"
        " --set eval_every=4 --set lr=0.001 --set sample_fraction=0.01 --resume --keep-going")


def test_train_and_bench_commands_per_method():
    plan = plan_for("tiny", methods=TORCH_ON, torch=(True, "PyTorch installed"),
                    overrides=[{"set": ["lr=0.01"], "methods": ["slide"]}])
    did = "delicious-200k-synth0.005"
    slide = commands.train_command(plan, did, "slide", "bs64", 0)
    assert slide.startswith("python -m slide.cli train --train ")
    assert "--set lr=0.01 --set batch_size=64 --resume --keep-going" in slide
    torch = commands.train_command(plan, did, "torch-full-cpu", None, 0)
    assert torch.startswith("python -m baselines.torch train --loss full --device cpu ")
    assert "lr=0.01" not in torch
    bench = commands.bench_command(plan, did, "torch-sampled-cpu", 0)
    assert bench.startswith("python -m baselines.torch bench --loss sampled --device cpu --like delicious-200k")
    assert "--batches" in bench and "--threads" not in bench
    assert commands.prepare_command(plan, did) == (
        f"--train data/synth/{did}/train.txt --test data/synth/{did}/test.txt")


def test_resources_of_timed_jobs():
    plan = plan_for("tiny")
    assert commands.is_gpu("tf-full-gpu") == commands.is_gpu("torch-sampled-gpu") == 1
    assert commands.is_gpu("torch-full-cpu") == 0
    budget = plan.datasets["amazon-670k-synth0.005"]["cfg"]["max_train_seconds"]
    assert commands.train_runtime(plan, "amazon-670k-synth0.005") == (
        plan.config["resources"]["train"]["runtime"] or -(-3 * budget // 60) + 15)
    assert commands.rule_runtime(plan.config, "report") >= 1


def test_invalid_override_is_one_line_per_method_naming_runs():
    plan = plan_for("tiny", methods={"slide": {"set": ["K=0"]}})
    lines = commands.settings_problems(plan)
    assert len(lines) == 1
    assert lines[0].startswith("invalid trainer setting for slide (")
    assert "K must be an integer >= 1, got 0" in lines[0]
    assert commands.settings_problems(plan_for("tiny")) == []


def test_settings_are_checked_once_per_distinct_command():
    calls = []

    def check(method, preset, sets, num_labels):
        calls.append((method, preset, tuple(sets)))
        return None

    plan = plan_for("tiny")
    assert commands.settings_problems(plan, check=check) == []
    assert len(calls) == len(set(calls)) < len(plan.runs) + len(plan.bench)
