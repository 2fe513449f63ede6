# aggregate -> plot -> report, per preset: the tables and the plan go to results/<preset>/, the report
# and its figures to reports/<preset>/, so that one preset never replaces another's report. None of
# these are timed, so they take one core.

from slide.report.aggregate import TABLE_NAMES, drop_stale_manifest, end_of_run
from slide.report.figures import TABLES_DRAWN
from slide.report.io import plan_path, report_path, tables_path

PRESET = config["preset"]
PLAN_JSON = plan_path(PRESET)
TABLES = {name: tables_path(PRESET, f"{name}.csv") for name in TABLE_NAMES}
# the state of every file the aggregate read: when one is gone or changed (a run.json deleted,
# or removed by a --forcerun that was killed), the record is dropped so that the tables, the
# figures and the report are rebuilt from the run files that exist (after rerunning what is missing)
AGGREGATE_MANIFEST = tables_path(PRESET, "aggregate_inputs.json")
_stale = drop_stale_manifest(AGGREGATE_MANIFEST)
if _stale:
    note(
        f"run files changed since results/{PRESET}/ was made ({_stale}): rebuilding the tables"
    )
REPORT_HTML = report_path(PRESET)
FIGURE_DIR = report_path(PRESET, "figures")
PIPELINE_START = time.time()


# quick jobs that read and write small files: never submitted to a cluster
localrules:
    skipped,
    aggregate,
    plot,
    report_html,


rule skipped:
    output:
        PLAN_JSON,
    log:
        f"logs/report/{PRESET}/skipped.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["report"]["mem_mb"],
        runtime=rule_runtime("report"),
    params:
        skipped=json.dumps(SKIPPED, sort_keys=True),
        imported=json.dumps(IMPORTED, sort_keys=True),
        datasets=json.dumps(DATASET_INFO, sort_keys=True),
        gpu=json.dumps(dict(available=GPU_AVAILABLE, reason=GPU_REASON)),
        preset=PRESET,
        cores=timed_threads(),
        threads=thread_counts(),
    script:
        "../scripts/write_plan.py"


rule aggregate:
    input:
        runs=RUN_JSONS,
        bench=BENCH_JSONS,
        job_benchmarks=JOB_BENCHMARKS,
        skipped=PLAN_JSON,
    output:
        **TABLES,
        manifest=AGGREGATE_MANIFEST,
    log:
        f"logs/report/{PRESET}/aggregate.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["report"]["mem_mb"],
        runtime=rule_runtime("report"),
    params:
        # not inputs: rule train would claim them and rerun them here
        imported=IMPORTED_JSONS,
    script:
        "../scripts/aggregate.py"


rule plot:
    input:
        **{k: TABLES[k] for k in TABLES_DRAWN},
        skipped=PLAN_JSON,
        paper=PAPER_RESULTS,
    output:
        png=report(
            f"{FIGURE_DIR}/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
        svg=f"{FIGURE_DIR}/{{figure}}.svg",
    log:
        f"logs/report/{PRESET}/plot_{{figure}}.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["report"]["mem_mb"],
        runtime=rule_runtime("report"),
    script:
        "../scripts/plot.py"


rule report_html:
    input:
        **TABLES,
        figures=expand(f"{FIGURE_DIR}/{{figure}}.png", figure=figure_names()),
        # requested, so a manifest dropped as stale makes Snakemake rerun the aggregate
        manifest=AGGREGATE_MANIFEST,
        skipped=PLAN_JSON,
        paper=PAPER_RESULTS,
    output:
        report(
            REPORT_HTML,
            caption="../report/report_html.rst",
            category="Report",
        ),
    log:
        f"logs/report/{PRESET}/report_html.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["report"]["mem_mb"],
        runtime=rule_runtime("report"),
    params:
        title=config["report"]["title"],
        experiments=json.dumps({k: v["enabled"] for k, v in EXP.items()}),
    script:
        "../scripts/report_html.py"
