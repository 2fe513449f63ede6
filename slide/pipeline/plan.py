"""Which datasets, methods, runs and benchmarks the workflow holds, and why others are left out.

:func:`make_plan` turns the validated configuration (schema defaults filled in) into a
:class:`Plan`; nothing here imports Snakemake, TensorFlow or PyTorch.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .methods import GPU_METHODS, TORCH_METHODS

PAPER_DATASETS = ("delicious-200k", "amazon-670k")
HEADLINE_EXPERIMENTS = ("time_curves", "iteration_curves", "sampled_softmax", "table")


def fmt(x) -> str:
    return f"{x:g}"


# ----------------------------------------------------------------------------- GPU and PyTorch


def gpu_status(mode: str, which=shutil.which, run=subprocess.run) -> tuple[bool, str]:
    """(available, reason) for config ``gpu`` (auto|yes|no).

    ``auto`` asks ``nvidia-smi -L`` only (no framework is imported while the workflow is parsed); a
    GPU job whose framework then sees no device stops with its trainer's one-line error.
    """
    if mode == "yes":
        return True, "assumed present (config gpu: yes)"
    if mode == "no":
        return False, "GPU runs switched off (config gpu: no)"
    smi = which("nvidia-smi")
    if smi is None:
        return False, "no GPU: nvidia-smi not found"
    try:
        out = run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"no GPU: nvidia-smi failed ({err})"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return False, "no GPU: nvidia-smi lists none"
    return True, "GPU listed by nvidia-smi"


def torch_status(find_spec=importlib.util.find_spec) -> tuple[bool, str]:
    """(importable, reason): whether PyTorch is installed, checked without importing it."""
    try:
        found = find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return True, "PyTorch installed"
    return False, "PyTorch not installed (pip install -e \".[torch]\")"


# ----------------------------------------------------------------------------- datasets


def dataset_id(name: str, cfg: dict) -> str:
    """The {dataset} wildcard: the name for real data, ``<name>-synth<scale>[-seed<n>]`` otherwise."""
    if cfg["source"] == "real":
        return name
    did = f"{name}-synth{cfg['scale']:g}"
    return did + (f"-seed{cfg['synth_seed']}" if cfg["synth_seed"] else "")


def _real_paths(spec, cfg, data_root):
    if cfg["path"]:
        folder = Path(cfg["path"])
        return folder, {k: folder / f for k, f in spec.files.items()}
    from slide.data.fetch import dataset_paths

    paths = dataset_paths(spec, data_root)
    return paths["folder"], paths


def describe_dataset(name: str, cfg: dict, spec, data_root: str = "data") -> tuple[dict, bool]:
    """(description, fetch): the dataset's files, label and why it is left out (``skip``), and
    whether its fetch job may be in the DAG."""
    d = dict(name=name, id=dataset_id(name, cfg), cfg=cfg, spec=spec, source=cfg["source"],
             title=spec.title, skip=None)
    if cfg["source"] == "synth":
        folder = Path(data_root) / "synth" / d["id"]
        d.update(train=str(folder / "train.txt"), test=str(folder / "test.txt"),
                 inputs=[str(folder / "train.txt"), str(folder / "test.txt")],
                 label=f"{spec.title} (synthetic, scale {cfg['scale']:g})")
        return d, False
    d["label"] = f"{spec.title} (real data)"
    folder, paths = _real_paths(spec, cfg, data_root)
    files = [paths[k] for k in spec.files]
    present = all(Path(p).is_file() for p in files)
    if spec.layout == "split":
        d.update(train=str(paths["data"]), test=str(paths["data"]), train_split=str(paths["train_split"]),
                 test_split=str(paths["test_split"]), split_column=spec.split_column)
    else:
        d.update(train=str(paths["train"]), test=str(paths["test"]))
    if cfg["path"]:
        d["inputs"] = [str(p) for p in files]
        if not present:
            d["skip"] = (f"real data not found in {folder}/ (config datasets.{name}.path); "
                         f"expected {', '.join(spec.file_names)}")
        return d, False
    d["inputs"] = [str(paths["marker"])]
    failed = Path(paths["raw_dir"]) / "FETCH_FAILED"
    if present:
        return d, True  # the fetch job only verifies files placed by hand
    if cfg["fetch"] == "never":
        d["skip"] = (f"real data not present in {folder}/ and datasets.{name}.fetch is 'never'; "
                     f"place {', '.join(spec.file_names)} there")
        return d, False
    if cfg["fetch"] == "auto" and failed.is_file():
        why = failed.read_text().strip().splitlines()[-1:] or ["(no message)"]
        d["skip"] = (f"real data neither fetched nor placed: an earlier `slide data fetch {name}` "
                     f"failed ({why[0]}); place {', '.join(spec.file_names)} in {folder}/ "
                     f"or delete {failed} to try the download again")
        return d, False
    return d, True


# ----------------------------------------------------------------------------- runs


def run_key(dataset, method, variant, seed, **_) -> str:
    """<dataset>/<method>/[<variant>/]seed<n>: a run's folder under results/ (and benchmarks/)."""
    return os.path.join(dataset, method, variant or "", f"seed{seed}")


def run_dir(dataset, method, variant, seed, **_) -> str:
    return os.path.join("results", run_key(dataset, method, variant, seed))


def thread_counts(thread_scaling: dict, cores: int) -> list[int]:
    """The benchmarks' thread counts: the configured ones, else 1, 2, 4, ... and ``cores``."""
    if thread_scaling["threads"]:
        return sorted(thread_scaling["threads"])
    counts, t = [], 1
    while t < cores:
        counts.append(t)
        t *= 2
    return counts + [cores]


def figure_names(experiments: dict) -> list[str]:
    figs = []
    if experiments["time_curves"]["enabled"]:
        figs += ["p1_vs_time", "headline"]
    for exp, fig in (("iteration_curves", "p1_vs_iterations"), ("sampled_softmax", "sampled_softmax"),
                     ("batch_size", "batch_size"), ("thread_scaling", "thread_scaling")):
        if experiments[exp]["enabled"]:
            figs.append(fig)
    if experiments["thread_scaling"]["enabled"]:  # SLIDE's benchmarks time its phases and count their bytes
        figs.append("memory_floor")
    return figs + ["jobs"]


@dataclass
class Plan:
    """Everything the rules need: datasets by id, runs and benchmarks, and what was left out."""

    config: dict
    cores: int  # threads of a timed job
    gpu: tuple[bool, str]
    torch: tuple[bool, str]
    datasets: dict = field(default_factory=dict)  # dataset id -> description
    fetch_names: set = field(default_factory=set)  # real datasets whose fetch job may be in the DAG
    skipped: list = field(default_factory=list)  # dict(dataset, method, variant, seed, reason)
    imported: list = field(default_factory=list)  # runs that cannot run here, made on another machine
    runs: list = field(default_factory=list)
    bench: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # messages for the user

    @property
    def enabled_methods(self) -> list[str]:
        return [m for m, c in self.config["methods"].items() if c["enabled"]]

    @property
    def thread_counts(self) -> list[int]:
        return thread_counts(self.config["experiments"]["thread_scaling"], self.cores)

    @property
    def figure_names(self) -> list[str]:
        return figure_names(self.config["experiments"])

    @property
    def run_jsons(self) -> list[str]:
        return [os.path.join(run_dir(**r), "run.json") for r in self.runs]

    @property
    def imported_jsons(self) -> list[str]:
        """run.json files of :attr:`imported` runs: read by the report, never (re)made by a job here."""
        return [os.path.join(run_dir(**r), "run.json") for r in self.imported]

    @property
    def bench_jsons(self) -> list[str]:
        return [os.path.join(run_dir(**b), "bench.json") for b in self.bench]

    @property
    def job_benchmarks(self) -> list[str]:
        """The ``benchmark:`` record of every timed job."""
        return [os.path.join("benchmarks", f"{run_key(**r)}.tsv") for r in self.runs + self.bench]

    @property
    def dataset_info(self) -> dict:
        return {did: dict(name=d["name"], label=d["label"], source=d["source"],
                          scale=d["cfg"]["scale"] if d["source"] == "synth" else 1.0,
                          target_p_at_1=d["cfg"]["target_p_at_1"])
                for did, d in self.datasets.items()}

    def method_skip(self, method: str) -> str | None:
        """Why ``method`` cannot run here (no PyTorch, no GPU), or None."""
        if method in TORCH_METHODS and not self.torch[0]:
            return self.torch[1]
        if method in GPU_METHODS and not self.gpu[0]:
            return self.gpu[1]
        return None

    def _exp_datasets(self, exp_cfg, allowed=None):
        names = set(exp_cfg.get("datasets") or [])
        return [did for did, d in self.datasets.items()
                if (not names or d["name"] in names) and (allowed is None or d["name"] in allowed)]

    def _exp_methods(self, exp_cfg):
        return [m for m in exp_cfg["methods"] if m in self.enabled_methods]

    def _add(self, target, did, method, variant, seed, **extra):
        """Plan a run or benchmark; one that cannot run here (no GPU, no PyTorch) is left out with the
        reason, unless it is a training run whose run.json is already there: made on another machine
        (say a GPU one, by ``workflow/scripts/gpu_bench.sh``) and copied in, it is imported as it is."""
        reason = self.datasets[did]["skip"] or self.method_skip(method)
        entry = dict(dataset=did, method=method, variant=variant, seed=seed, **extra)
        if not reason:
            target.append(entry)
        elif (target is self.runs and not self.datasets[did]["skip"]
              and os.path.isfile(os.path.join(run_dir(**entry), "run.json"))):
            self.imported.append(dict(entry, reason=reason))
        else:
            self.skipped.append(dict(entry, reason=reason))

    def plan_runs(self) -> None:
        """Every training run (headline and variants) and benchmark, or why it is left out."""
        exp = self.config["experiments"]
        headline = any(exp[k]["enabled"] for k in HEADLINE_EXPERIMENTS)
        ss, bs, ts = exp["sampled_softmax"], exp["batch_size"], exp["thread_scaling"]
        for seed in self.config["seeds"]:
            if headline:
                for did in self.datasets:
                    for m in self.enabled_methods:
                        self._add(self.runs, did, m, None, seed)
            if ss["enabled"]:
                for did in self._exp_datasets(ss):
                    for m in self._exp_methods(ss):
                        for f in ss["fractions"]:
                            self._add(self.runs, did, m, f"frac{fmt(f)}", seed, fraction=f)
            if bs["enabled"]:
                for did in self._exp_datasets(bs):
                    for m in self._exp_methods(bs):
                        for n in bs["sizes"]:
                            self._add(self.runs, did, m, f"bs{n}", seed, batch_size=n)
        if ts["enabled"]:
            for did in self._exp_datasets(ts, allowed=PAPER_DATASETS):
                for m in self._exp_methods(ts):
                    for t in self.thread_counts:
                        self._add(self.bench, did, m, f"threads{t}", self.config["seeds"][0], threads=t)


def make_plan(config: dict, cores: int, gpu=None, torch=None, registry=None, data_root: str = "data") -> Plan:
    """The plan of ``config`` (validated, defaults filled in) for timed jobs of ``cores`` threads.

    ``gpu`` and ``torch`` are (available, reason); checked here (cheaply) when None and a method
    that needs them is enabled.
    """
    if registry is None:
        from slide.data.registry import load_registry

        registry = load_registry()
    enabled = [m for m, c in config["methods"].items() if c["enabled"]]
    if gpu is None:
        gpu = gpu_status(config["gpu"]) if any(m in GPU_METHODS for m in enabled) else (
            False, "no GPU method enabled")
    if torch is None:
        torch = torch_status() if any(m in TORCH_METHODS for m in enabled) else (
            False, "no PyTorch method enabled")
    plan = Plan(config=config, cores=cores, gpu=gpu, torch=torch)
    for name, cfg in config["datasets"].items():
        if cfg["enabled"]:
            d, fetch = describe_dataset(name, cfg, registry[name], data_root)
            plan.datasets[d["id"]] = d
            if fetch:
                plan.fetch_names.add(name)
            if d["skip"]:
                plan.notes.append(f"leaving out {name}: {d['skip']}")
    if not plan.datasets:
        plan.notes.append("no dataset is enabled (config `datasets`): only the report is built")
    if any(m in TORCH_METHODS for m in enabled) and not torch[0]:
        plan.notes.append(f"leaving out PyTorch runs: {torch[1]}")
    if any(m in GPU_METHODS for m in enabled) and not gpu[0]:
        plan.notes.append(f"leaving out GPU runs: {gpu[1]}")
    plan.plan_runs()
    if plan.imported:
        plan.notes.append(f"importing {len(plan.imported)} run(s) that cannot run here but whose run.json is "
                          f"there (made on another machine): {', '.join(plan.imported_jsons)}")
    if plan.skipped:
        plan.notes.append(f"{len(plan.skipped)} run(s) left out of the DAG; listed in "
                          f"results/{config['preset']}/skipped.json and the report")
    return plan


__all__ = ["PAPER_DATASETS", "Plan", "make_plan", "gpu_status", "torch_status", "dataset_id",
           "describe_dataset", "run_key", "run_dir", "thread_counts", "figure_names", "fmt"]
