"""Command lines of the pipeline's jobs (train, bench, prepare), the parse-time check of every
run's ``--set`` overrides, and the resources of timed jobs.

Every function takes the :class:`~.plan.Plan` and plain values (no Snakemake wildcards objects), so
the exact command a job will run can be tested without Snakemake.
"""

from __future__ import annotations

import math
import shlex

from .methods import GPU_METHODS, METHODS, method_command
from .plan import PAPER_DATASETS, Plan, fmt


def sets_for(config: dict, d: dict, method: str) -> list[str]:
    """``--set`` overrides of ``method`` on dataset ``d``: methods.<m>.set, then matching overrides."""
    sets = list(config["methods"][method]["set"])
    for o in config["overrides"]:
        if o["datasets"] and d["name"] not in o["datasets"]:
            continue
        if o["methods"] and method not in o["methods"]:
            continue
        sets += o["set"]
    return sets


def variant_sets(config: dict, variant: str | None) -> list[str]:
    """The overrides a variant adds: bs<n> -> batch_size=n, frac<f> -> <sampled_softmax.key>=f."""
    if variant is None:
        return []
    if variant.startswith("bs"):
        return [f"batch_size={int(variant[2:])}"]
    if variant.startswith("frac"):
        return [f"{config['experiments']['sampled_softmax']['key']}={variant[4:]}"]
    raise ValueError(f"unknown variant {variant!r}")


def data_args(d: dict) -> list[str]:
    args = ["--train", d["train"], "--test", d["test"]]
    if d.get("train_split"):
        args += ["--train-split", d["train_split"], "--test-split", d["test_split"]]
        args += ["--split-column", str(d["split_column"])]
    return args


def paper_preset(config: dict, d: dict) -> str | None:
    """The trainer's --preset: the paper dataset a run stands for (config paper_preset: auto)."""
    return d["name"] if config["paper_preset"] == "auto" and d["name"] in PAPER_DATASETS else None


def train_budget(config: dict, d: dict, variant: str | None):
    budget = d["cfg"]["max_train_seconds"]
    exp = config["experiments"]
    if variant and variant.startswith("bs"):
        budget = exp["batch_size"]["max_train_seconds"] or budget
    if variant and variant.startswith("frac"):
        budget = exp["sampled_softmax"]["max_train_seconds"] or budget
    return budget


def train_command(plan: Plan, dataset: str, method: str, variant: str | None, seed) -> str:
    """The trainer's command line, without --threads (added in the shell from {threads})."""
    from .plan import run_dir

    config, d = plan.config, plan.datasets[dataset]
    cfg = d["cfg"]
    args = data_args(d)
    args += ["--out", run_dir(dataset, method, variant, seed), "--dataset", dataset]
    args += ["--epochs", fmt(cfg["epochs"]), "--eval-points", str(cfg["eval_points"])]
    if cfg["max_steps"]:
        args += ["--max-steps", str(cfg["max_steps"])]
    if cfg["patience"]:
        args += ["--patience", str(cfg["patience"])]
    budget = train_budget(config, d, variant)
    if budget:
        args += ["--max-train-seconds", fmt(budget)]
    args += ["--seed", str(seed)]
    preset = paper_preset(config, d)
    if preset:
        args += ["--preset", preset]
    for s in sets_for(config, d, method) + variant_sets(config, variant):
        args += ["--set", s]
    args += ["--resume", "--keep-going"]
    return " ".join([method_command(method, "train")] + [shlex.quote(a) for a in args])


def bench_command(plan: Plan, dataset: str, method: str, seed) -> str:
    """The benchmark's command line (data of the dataset's shape), without --threads."""
    d = plan.datasets[dataset]
    ts = plan.config["experiments"]["thread_scaling"]
    scale = ts["scale"] or (d["cfg"]["scale"] if d["source"] == "synth" else 1.0)
    args = ["--like", d["name"], "--scale", fmt(scale), "--seed", str(seed)]
    args += ["--batches", str(ts["batches"]), "--warmup", str(ts["warmup"])]
    for s in sets_for(plan.config, d, method):
        args += ["--set", s]
    return " ".join([method_command(method, "bench")] + [shlex.quote(a) for a in args])


def prepare_command(plan: Plan, dataset: str) -> str:
    return " ".join(shlex.quote(a) for a in data_args(plan.datasets[dataset]))


# ----------------------------------------------------------------------------- resources


def train_runtime(plan: Plan, dataset: str) -> int:
    """Minutes: from the time budget (x3 for start-up and evaluation, +15), or the config."""
    rt = plan.config["resources"]["train"]["runtime"]
    if rt:
        return rt
    budget = plan.datasets[dataset]["cfg"]["max_train_seconds"]
    return int(math.ceil(3 * budget / 60)) + 15 if budget else 24 * 60


def rule_runtime(config: dict, group: str) -> int:
    return config["resources"][group]["runtime"] or 60


def is_gpu(method: str) -> int:
    return int(method in GPU_METHODS)


# ----------------------------------------------------------------------------- settings check
# Every run's --set overrides are checked while the workflow is parsed, with the trainer's own rules
# (unknown keys, types and ranges), so a bad value in a preset fails before any job runs, naming the
# key and the run. Nothing is built; TensorFlow and PyTorch are not imported.


def _num_labels(d: dict):
    """Labels of a dataset (the stand-in's at its scale), for checks that depend on them."""
    try:
        if d["source"] == "synth":
            from slide.data.synth import synth_shape

            return synth_shape(d["name"], d["cfg"]["scale"]).labels
        return int(d["spec"].stats["labels"])
    except Exception:
        return None


def _baseline_class(method: str):
    module = METHODS[method][0]
    try:
        if module == "baselines.tf":
            from baselines.tf.method import METHODS as classes
        else:
            from baselines.torch.method import METHODS as classes
    except ImportError:
        return None
    return classes.get(method)


def check_trainer_settings(method: str, preset, sets, num_labels=None) -> str | None:
    """The trainer's complaint about ``--preset preset --set sets`` for ``method``, or None."""
    from slide.adapter import parse_overrides
    from slide.errors import ConfigError

    try:
        overrides = parse_overrides(sets)
        if method == "slide":
            from slide.engine.model import SlideMethod
            from slide.engine.presets import validate as slide_validate

            slide_validate(SlideMethod.resolve_config(preset, overrides))
        else:
            cls = _baseline_class(method)
            if cls is None:  # a method without parse-time rules: its trainer checks at run time
                return None
            probe = cls.__new__(cls)  # _check_config's rules without building a model
            probe.config = cls.resolve_config(preset, overrides)
            probe.num_labels = int(num_labels) if num_labels else 2**62
            probe._check_config()
    except ConfigError as err:
        return str(err)
    return None


def settings_problems(plan: Plan, check=check_trainer_settings) -> list[str]:
    """One line per (method, complaint) about the planned runs' overrides; empty when all are valid."""
    checked, problems = {}, {}  # (method, preset, sets) -> complaint; (method, complaint) -> runs
    for r in plan.runs + plan.bench:
        did, method, variant = r["dataset"], r["method"], r["variant"]
        d = plan.datasets[did]
        if variant and variant.startswith("threads"):  # bench: --like is its preset
            preset, sets = d["name"], sets_for(plan.config, d, method)
        else:
            preset = paper_preset(plan.config, d)
            sets = sets_for(plan.config, d, method) + variant_sets(plan.config, variant)
        key = (method, preset, tuple(sets))
        if key not in checked:
            checked[key] = check(method, preset, sets, _num_labels(d))
        if checked[key]:
            run = f"{did}/{variant}" if variant else did
            problems.setdefault((method, checked[key]), []).append((run, sets))
    lines = []
    for (method, why), runs in problems.items():
        names = ", ".join(run for run, _ in runs[:3]) + (", ..." if len(runs) > 3 else "")
        sets = " ".join(runs[0][1]) or "(none)"
        lines.append(f"invalid trainer setting for {method} ({len(runs)} run(s): {names}): {why} "
                     f"[--set {sets}; from config methods.{method}.set, overrides or an experiment]")
    return lines


__all__ = ["sets_for", "variant_sets", "data_args", "paper_preset", "train_command", "bench_command",
           "prepare_command", "train_runtime", "rule_runtime", "is_gpu", "check_trainer_settings",
           "settings_problems"]
