# Shared definitions: the plan (which datasets, methods and runs are in the DAG, which are left out
# and why) and the command lines come from slide/pipeline/ (unit-tested in
# tests/test_pipeline_plan.py); this file hands them to the rules as input functions.
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

from slide.pipeline import commands
from slide.pipeline.plan import make_plan

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


# Timed jobs request timed_slot=1 and take every core (timed_threads()); the limit of 1 that runs
# them one at a time is set in workflow/profiles/default (a cluster profile sets its own). That
# profile is found automatically only beside a workflow/Snakefile; with this top-level Snakefile the
# same limit is applied here unless a profile or --resources gave one.
if "timed_slot" not in workflow.global_resources.keys():
    workflow.register_resource("timed_slot", 1)


def timed_threads():
    """Threads of a timed job: config `threads`, or every core given to Snakemake."""
    return config["threads"] or given_cores()


# ----------------------------------------------------------------------------- the plan

PLAN = make_plan(config, timed_threads())
for _msg in PLAN.notes:
    note(_msg)
DATASETS = PLAN.datasets  # dataset id (the {dataset} wildcard) -> description
FETCH_NAMES = PLAN.fetch_names  # real datasets whose fetch job may be in the DAG
SKIPPED = (
    PLAN.skipped
)  # runs left out of the DAG: dict(dataset, method, variant, seed, reason)
DATASET_INFO = PLAN.dataset_info
GPU_AVAILABLE, GPU_REASON = PLAN.gpu
RUNS, BENCH = PLAN.runs, PLAN.bench
RUN_JSONS, BENCH_JSONS = PLAN.run_jsons, PLAN.bench_jsons
# runs that cannot run here whose run.json was made on another machine: read, never a job's output
IMPORTED = PLAN.imported
IMPORTED_JSONS = PLAN.imported_jsons
JOB_BENCHMARKS = PLAN.job_benchmarks  # the `benchmark:` record of every timed job

# Every run's --set overrides, checked now with the trainers' own rules: a bad value in a preset
# fails before any job runs, naming the key and the run.
_problems = commands.settings_problems(PLAN)
if _problems:
    raise ValueError("\n".join(_problems))


def thread_counts():
    return PLAN.thread_counts


def figure_names():
    return PLAN.figure_names


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


# ----------------------------------------------------------------------------- input functions


def train_command(wildcards):
    """The trainer's command line, without --threads (added in the shell from {threads})."""
    return commands.train_command(
        PLAN,
        wildcards.dataset,
        wildcards.method,
        wildcards.get("variant"),
        wildcards.seed,
    )


def bench_command(wildcards):
    """The benchmark's command line (data of the dataset's shape), without --threads."""
    return commands.bench_command(
        PLAN, wildcards.dataset, wildcards.method, wildcards.seed
    )


def prepare_command(wildcards):
    return commands.prepare_command(PLAN, wildcards.dataset)


def train_runtime(wildcards):
    return commands.train_runtime(PLAN, wildcards.dataset)


def is_gpu(wildcards):
    return commands.is_gpu(wildcards.method)


def rule_runtime(group):
    return commands.rule_runtime(config, group)


# ----------------------------------------------------------------------------- targets


def final_targets():
    from slide.report.io import final_outputs

    # the aggregate's record of its inputs: requested, so that when it is dropped as stale (a
    # run file deleted or changed, see report.smk) the tables and the report are rebuilt
    return final_outputs(config["preset"], figure_names()) + [AGGREGATE_MANIFEST]
