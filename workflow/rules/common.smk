# Shared definitions: which datasets, methods and runs are in the DAG (and which are left out,
# with the reason), the command lines of the trainers, input functions and resources.
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from slide.data.fetch import dataset_paths
from slide.data.registry import load_registry

PAPER_RESULTS = os.path.join(
    workflow.basedir, "workflow", "resources", "paper_results.yaml"
)
# Shell commands run `python`: the folder of the interpreter that runs Snakemake (or of config
# `python`) is put first on PATH, so `.venv/bin/snakemake` works without an activated venv.
_interpreter = config["python"] or sys.executable
if "/" in _interpreter:
    _bindir = shlex.quote(str(Path(_interpreter).parent))
    shell.prefix(f'set -euo pipefail; export PATH={_bindir}:"$PATH"; ')
# Training jobs die with the workflow: the launcher (slide/report/launch.py) watches this process
# and stops its trainer when it is gone, even after a SIGKILL. A cluster job's own Snakemake sets
# its id when it parses the workflow.
os.environ.update(SLIDE_WORKFLOW_PID=str(os.getpid()))
PAPER_DATASETS = ("delicious-200k", "amazon-670k")
GPU_METHODS = ("tf-full-gpu", "tf-sampled-gpu")
REGISTRY = load_registry()
EXP = config["experiments"]


def note(msg):
    """A parse-time message for the user (stderr, so it does not disturb --dryrun output)."""
    print(f"[slide pipeline] {msg}", file=sys.stderr)


def given_cores():
    """Cores given to Snakemake (--cores); the machine's when none were given (dry runs)."""
    try:
        cores = workflow.cores
    except Exception:
        cores = None
    if not isinstance(cores, int) or cores < 1 or cores > 4096:
        cores = os.cpu_count() or 1
    return cores


# Timed jobs request timed_slot=1; unless --resources names it, its global limit is 1, so they
# run one at a time (and each takes every core, see timed_threads()).
if "timed_slot" not in workflow.global_resources.keys():
    workflow.register_resource("timed_slot", 1)


def timed_threads():
    """Threads of a timed job: config `threads`, or every core given to Snakemake."""
    return config["threads"] or given_cores()


# ----------------------------------------------------------------------------- GPU check


def _gpu_check_uncached():
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no GPU: nvidia-smi not found"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"no GPU: nvidia-smi failed ({err})"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return False, "no GPU: nvidia-smi lists none"
    code = (
        "import json; from baselines.tf.device import gpu_available; "
        "print(json.dumps(bool(gpu_available())))"
    )
    try:
        res = subprocess.run(
            [_interpreter, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
        )
        seen = json.loads(res.stdout.strip().splitlines()[-1])
    except Exception as err:
        return False, f"no usable GPU: TensorFlow check failed ({err})"
    if not seen:
        return (
            False,
            "no usable GPU: nvidia-smi lists one but TensorFlow does not see it",
        )
    return True, "GPU seen by nvidia-smi and TensorFlow"


def gpu_status():
    """(available, reason); `gpu: auto` results are cached for an hour per host."""
    if config["gpu"] == "yes":
        return True, "assumed present (config gpu: yes)"
    if config["gpu"] == "no":
        return False, "GPU runs switched off (config gpu: no)"
    key = [
        socket.gethostname(),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        _interpreter,
    ]
    cache = Path(".snakemake") / "slide-gpu-check.json"
    try:
        cached = json.loads(cache.read_text())
        if cached["key"] == key and time.time() - cached["time"] < 3600:
            return bool(cached["available"]), cached["reason"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    available, reason = _gpu_check_uncached()
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps(
                dict(key=key, time=time.time(), available=available, reason=reason)
            )
        )
        os.replace(tmp, cache)
    except OSError:
        pass
    return available, reason


# ----------------------------------------------------------------------------- datasets

SKIPPED = []  # runs left out of the DAG: dict(dataset, method, variant, seed, reason)
DATASETS = {}  # dataset id (the {dataset} wildcard) -> description
FETCH_NAMES = set()  # real datasets whose fetch job may be in the DAG


def dataset_id(name, cfg):
    if cfg["source"] == "real":
        return name
    did = f"{name}-synth{cfg['scale']:g}"
    return did + (f"-seed{cfg['synth_seed']}" if cfg["synth_seed"] else "")


def _describe_dataset(name, cfg):
    spec = REGISTRY[name]
    d = dict(
        name=name,
        id=dataset_id(name, cfg),
        cfg=cfg,
        spec=spec,
        source=cfg["source"],
        title=spec.title,
        skip=None,
    )
    if cfg["source"] == "synth":
        folder = Path("data") / "synth" / d["id"]
        d.update(
            train=str(folder / "train.txt"),
            test=str(folder / "test.txt"),
            inputs=[str(folder / "train.txt"), str(folder / "test.txt")],
            label=f"{spec.title} (synthetic, scale {cfg['scale']:g})",
        )
        return d
    d["label"] = f"{spec.title} (real data)"
    if cfg["path"]:
        folder = Path(cfg["path"])
        paths = {k: folder / f for k, f in spec.files.items()}
    else:
        paths = dataset_paths(spec, "data")
        folder = paths["folder"]
    files = [paths[k] for k in spec.files]
    present = all(p.is_file() for p in files)
    if spec.layout == "split":
        d.update(
            train=str(paths["data"]),
            test=str(paths["data"]),
            train_split=str(paths["train_split"]),
            test_split=str(paths["test_split"]),
            split_column=spec.split_column,
        )
    else:
        d.update(train=str(paths["train"]), test=str(paths["test"]))
    if cfg["path"]:
        d["inputs"] = [str(p) for p in files]
        if not present:
            d["skip"] = (
                f"real data not found in {folder}/ (config datasets.{name}.path); "
                f"expected {', '.join(spec.file_names)}"
            )
        return d
    d["inputs"] = [str(paths["marker"])]
    failed = paths["raw_dir"] / "FETCH_FAILED"
    if present:
        FETCH_NAMES.add(name)  # the fetch job only verifies files placed by hand
    elif cfg["fetch"] == "never":
        d["skip"] = (
            f"real data not present in {folder}/ and datasets.{name}.fetch is 'never'; "
            f"place {', '.join(spec.file_names)} there"
        )
    elif cfg["fetch"] == "auto" and failed.is_file():
        why = failed.read_text().strip().splitlines()[-1:] or ["(no message)"]
        d["skip"] = (
            f"real data neither fetched nor placed: an earlier `slide data fetch {name}` "
            f"failed ({why[0]}); place {', '.join(spec.file_names)} in {folder}/ "
            f"or delete {failed} to try the download again"
        )
    else:
        FETCH_NAMES.add(name)
    return d


for _name, _cfg in config["datasets"].items():
    if _cfg["enabled"]:
        _d = _describe_dataset(_name, _cfg)
        DATASETS[_d["id"]] = _d
        if _d["skip"]:
            note(f"leaving out {_name}: {_d['skip']}")

DATASET_INFO = {
    did: dict(
        name=d["name"],
        label=d["label"],
        source=d["source"],
        scale=d["cfg"]["scale"] if d["source"] == "synth" else 1.0,
        target_p_at_1=d["cfg"]["target_p_at_1"],
    )
    for did, d in DATASETS.items()
}

if not DATASETS:
    note("no dataset is enabled (config `datasets`): only the report is built")

# ----------------------------------------------------------------------------- methods

ENABLED_METHODS = [m for m, c in config["methods"].items() if c["enabled"]]
if any(m in GPU_METHODS for m in ENABLED_METHODS):
    GPU_AVAILABLE, GPU_REASON = gpu_status()
    if not GPU_AVAILABLE:
        note(f"leaving out TF-GPU runs: {GPU_REASON}")
else:
    GPU_AVAILABLE, GPU_REASON = False, "no GPU method enabled"


def method_skip(method):
    if method in GPU_METHODS and not GPU_AVAILABLE:
        return GPU_REASON
    return None


# ----------------------------------------------------------------------------- runs


def _fmt(x):
    return f"{x:g}"


HEADLINE_ON = any(
    EXP[k]["enabled"]
    for k in ("time_curves", "iteration_curves", "sampled_softmax", "table")
)


def _exp_datasets(exp_cfg, allowed=None):
    names = set(exp_cfg.get("datasets") or [])
    out = []
    for did, d in DATASETS.items():
        if names and d["name"] not in names:
            continue
        if allowed is not None and d["name"] not in allowed:
            continue
        out.append(did)
    return out


def _exp_methods(exp_cfg):
    return [m for m in exp_cfg["methods"] if m in ENABLED_METHODS]


def _plan():
    """Every training run (headline and variants) and benchmark, or why it is left out."""
    runs, bench = [], []

    def add(target, did, method, variant, seed, **extra):
        reason = DATASETS[did]["skip"] or method_skip(method)
        entry = dict(dataset=did, method=method, variant=variant, seed=seed, **extra)
        if reason:
            SKIPPED.append(dict(entry, reason=reason))
        else:
            target.append(entry)

    for seed in config["seeds"]:
        if HEADLINE_ON:
            for did in DATASETS:
                for m in ENABLED_METHODS:
                    add(runs, did, m, None, seed)
        ss = EXP["sampled_softmax"]
        if ss["enabled"]:
            for did in _exp_datasets(ss):
                for m in _exp_methods(ss):
                    for f in ss["fractions"]:
                        add(runs, did, m, f"frac{_fmt(f)}", seed, fraction=f)
        bs = EXP["batch_size"]
        if bs["enabled"]:
            for did in _exp_datasets(bs):
                for m in _exp_methods(bs):
                    for n in bs["sizes"]:
                        add(runs, did, m, f"bs{n}", seed, batch_size=n)
    ts = EXP["thread_scaling"]
    if ts["enabled"]:
        for did in _exp_datasets(ts, allowed=PAPER_DATASETS):
            for m in _exp_methods(ts):
                for t in thread_counts():
                    add(bench, did, m, f"threads{t}", config["seeds"][0], threads=t)
    return runs, bench


def thread_counts():
    ts = EXP["thread_scaling"]
    if ts["threads"]:
        return sorted(ts["threads"])
    cores = timed_threads()
    counts, t = [], 1
    while t < cores:
        counts.append(t)
        t *= 2
    return counts + [cores]


def run_key(dataset, method, variant, seed, **_):
    """<dataset>/<method>/[<variant>/]seed<n>: a run's folder under results/ (and benchmarks/)."""
    return os.path.join(dataset, method, variant or "", f"seed{seed}")


def run_dir(dataset, method, variant, seed, **_):
    return os.path.join("results", run_key(dataset, method, variant, seed))


RUNS, BENCH = _plan()
RUN_JSONS = [os.path.join(run_dir(**r), "run.json") for r in RUNS]
BENCH_JSONS = [os.path.join(run_dir(**b), "bench.json") for b in BENCH]
# the `benchmark:` record of every timed job
JOB_BENCHMARKS = [
    os.path.join("benchmarks", f"{run_key(**r)}.tsv") for r in RUNS + BENCH
]
if SKIPPED:
    note(
        f"{len(SKIPPED)} run(s) left out of the DAG; listed in results/{config['preset']}/skipped.json and the report"
    )


# ----------------------------------------------------------------------------- wildcards


def _alternation(values):
    values = sorted(set(values), key=len, reverse=True)
    return "|".join(re.escape(v) for v in values) if values else "(?!)"


wildcard_constraints:
    dataset=_alternation(DATASETS),
    name=_alternation(FETCH_NAMES),
    method=_alternation(config["methods"]),
    seed=r"\d+",
    variant=r"bs\d+|frac[0-9.e-]+",
    nthreads=r"\d+",
    figure=r"[a-z0-9_]+",


# ----------------------------------------------------------------------------- commands


def _sets_for(did, method):
    d = DATASETS[did]
    sets = list(config["methods"][method]["set"])
    for o in config["overrides"]:
        if o["datasets"] and d["name"] not in o["datasets"]:
            continue
        if o["methods"] and method not in o["methods"]:
            continue
        sets += o["set"]
    return sets


def _variant_sets(variant):
    if variant is None:
        return []
    if variant.startswith("bs"):
        return [f"batch_size={int(variant[2:])}"]
    if variant.startswith("frac"):
        return [f"{EXP['sampled_softmax']['key']}={variant[4:]}"]
    raise ValueError(f"unknown variant {variant!r}")


def _trainer(method):
    if method == "slide":
        return "python -m slide.cli train"
    _, loss, device = method.split("-")
    return f"python -m baselines.tf train --loss {loss} --device {device}"


def _data_args(d):
    args = ["--train", d["train"], "--test", d["test"]]
    if d.get("train_split"):
        args += ["--train-split", d["train_split"], "--test-split", d["test_split"]]
        args += ["--split-column", str(d["split_column"])]
    return args


def train_command(wildcards):
    """The trainer's command line, without --threads (added in the shell from {threads})."""
    did, method = wildcards.dataset, wildcards.method
    variant = wildcards.get("variant")
    d = DATASETS[did]
    cfg = d["cfg"]
    args = _data_args(d)
    args += ["--out", run_dir(did, method, variant, wildcards.seed), "--dataset", did]
    args += ["--epochs", _fmt(cfg["epochs"]), "--eval-points", str(cfg["eval_points"])]
    if cfg["max_steps"]:
        args += ["--max-steps", str(cfg["max_steps"])]
    if cfg["patience"]:
        args += ["--patience", str(cfg["patience"])]
    budget = cfg["max_train_seconds"]
    if variant and variant.startswith("bs"):
        budget = EXP["batch_size"]["max_train_seconds"] or budget
    if variant and variant.startswith("frac"):
        budget = EXP["sampled_softmax"]["max_train_seconds"] or budget
    if budget:
        args += ["--max-train-seconds", _fmt(budget)]
    args += ["--seed", str(wildcards.seed)]
    if config["paper_preset"] == "auto" and d["name"] in PAPER_DATASETS:
        args += ["--preset", d["name"]]
    for s in _sets_for(did, method) + _variant_sets(variant):
        args += ["--set", s]
    args += ["--resume", "--keep-going"]
    return " ".join([_trainer(method)] + [shlex.quote(a) for a in args])


def bench_command(wildcards):
    """The benchmark's command line (data of the dataset's shape), without --threads."""
    d = DATASETS[wildcards.dataset]
    ts = EXP["thread_scaling"]
    scale = ts["scale"] or (d["cfg"]["scale"] if d["source"] == "synth" else 1.0)
    if wildcards.method == "slide":
        cmd = "python -m slide.cli bench"
    else:
        _, loss, device = wildcards.method.split("-")
        cmd = f"python -m baselines.tf bench --loss {loss} --device {device}"
    args = ["--like", d["name"], "--scale", _fmt(scale), "--seed", str(wildcards.seed)]
    args += ["--batches", str(ts["batches"]), "--warmup", str(ts["warmup"])]
    for s in _sets_for(wildcards.dataset, wildcards.method):
        args += ["--set", s]
    return " ".join([cmd] + [shlex.quote(a) for a in args])


def prepare_command(wildcards):
    return " ".join(shlex.quote(a) for a in _data_args(DATASETS[wildcards.dataset]))


# ----------------------------------------------------------------------------- settings check
# Every run's --set overrides are checked now, with the trainer's own rules (unknown keys, types
# and ranges), so a bad value in a preset fails before any job runs, naming the key and the run.
# Nothing is built and TensorFlow is not imported.


def _num_labels(d):
    """Labels of a dataset (the stand-in's at its scale), for checks that depend on them."""
    try:
        if d["source"] == "synth":
            from slide.data.synth import synth_shape

            return synth_shape(d["name"], d["cfg"]["scale"]).labels
        return int(d["spec"].stats["labels"])
    except Exception:
        return None


def check_trainer_settings(method, preset, sets, num_labels=None):
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
            from baselines.tf.method import METHODS

            cls = METHODS.get(method)
            # a method without parse-time rules: its trainer checks at run time
            if cls is None:
                return None
            probe = cls.__new__(cls)  # _check_config's rules without building a model
            probe.config = cls.resolve_config(preset, overrides)
            probe.num_labels = int(num_labels) if num_labels else 2**62
            probe._check_config()
    except ConfigError as err:
        return str(err)
    return None


def _check_planned_settings():
    checked, problems = (
        {},
        {},
    )  # (method, preset, sets) -> complaint; (method, complaint) -> runs
    for r in RUNS + BENCH:
        did, method, variant = r["dataset"], r["method"], r["variant"]
        d = DATASETS[did]
        if variant and variant.startswith("threads"):  # bench: --like is its preset
            preset, sets = d["name"], _sets_for(did, method)
        else:
            auto = config["paper_preset"] == "auto" and d["name"] in PAPER_DATASETS
            preset = d["name"] if auto else None
            sets = _sets_for(did, method) + _variant_sets(variant)
        key = (method, preset, tuple(sets))
        if key not in checked:
            checked[key] = check_trainer_settings(method, preset, sets, _num_labels(d))
        if checked[key]:
            run = f"{did}/{variant}" if variant else did
            problems.setdefault((method, checked[key]), []).append((run, sets))
    lines = []
    for (method, why), runs in problems.items():
        names = ", ".join(run for run, _ in runs[:3]) + (
            ", ..." if len(runs) > 3 else ""
        )
        sets = " ".join(runs[0][1]) or "(none)"
        lines.append(
            f"invalid trainer setting for {method} ({len(runs)} run(s): {names}): {why} "
            f"[--set {sets}; from config methods.{method}.set, overrides or an experiment]"
        )
    if lines:
        raise ValueError("\n".join(lines))


_check_planned_settings()


# ----------------------------------------------------------------------------- resources


def train_runtime(wildcards):
    """Minutes: from the time budget (x3 for start-up and evaluation, +15), or the config."""
    rt = config["resources"]["train"]["runtime"]
    if rt:
        return rt
    budget = DATASETS[wildcards.dataset]["cfg"]["max_train_seconds"]
    return int(math.ceil(3 * budget / 60)) + 15 if budget else 24 * 60


def is_gpu(wildcards):
    return int(wildcards.method in GPU_METHODS)


def rule_runtime(group):
    return config["resources"][group]["runtime"] or 60


# ----------------------------------------------------------------------------- targets


def figure_names():
    figs = []
    if EXP["time_curves"]["enabled"]:
        figs += ["p1_vs_time", "headline"]
    if EXP["iteration_curves"]["enabled"]:
        figs.append("p1_vs_iterations")
    if EXP["sampled_softmax"]["enabled"]:
        figs.append("sampled_softmax")
    if EXP["batch_size"]["enabled"]:
        figs.append("batch_size")
    if EXP["thread_scaling"]["enabled"]:
        figs.append("thread_scaling")
    figs.append("jobs")
    return figs


def final_targets():
    from slide.report.io import final_outputs

    # the aggregate's record of its inputs: requested, so that when it is dropped as stale (a
    # run file deleted or changed, see report.smk) the tables and the report are rebuilt
    return final_outputs(config["preset"], figure_names()) + [AGGREGATE_MANIFEST]
