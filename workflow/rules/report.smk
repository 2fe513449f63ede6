# aggregate -> plot -> report. None of these are timed, so they take one core.


rule skipped:
    output:
        "results/skipped.json",
    log:
        "logs/report/skipped.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["report"]["mem_mb"],
        runtime=rule_runtime("report"),
    params:
        skipped=json.dumps(SKIPPED, sort_keys=True),
        datasets=json.dumps(DATASET_INFO, sort_keys=True),
        gpu=json.dumps(dict(available=GPU_AVAILABLE, reason=GPU_REASON)),
        preset=config["preset"],
        cores=timed_threads(),
        threads=thread_counts(),
    script:
        "../scripts/write_plan.py"


rule aggregate:
    input:
        runs=RUN_JSONS,
        bench=BENCH_JSONS,
        job_benchmarks=JOB_BENCHMARKS,
        skipped="results/skipped.json",
    output:
        summary="results/summary.csv",
        curves="results/curves.csv",
        threads="results/threads.csv",
        speedups="results/speedups.csv",
        table="results/table.csv",
        jobs="results/jobs.csv",
    log:
        "logs/report/aggregate.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["report"]["mem_mb"],
        runtime=rule_runtime("report"),
    script:
        "../scripts/aggregate.py"


rule plot:
    input:
        summary="results/summary.csv",
        curves="results/curves.csv",
        threads="results/threads.csv",
        speedups="results/speedups.csv",
        jobs="results/jobs.csv",
        skipped="results/skipped.json",
        paper=PAPER_RESULTS,
    output:
        png=report(
            "reports/figures/{figure}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
        svg="reports/figures/{figure}.svg",
    log:
        "logs/report/plot_{figure}.log",
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
        figures=expand("reports/figures/{figure}.png", figure=figure_names()),
        summary="results/summary.csv",
        curves="results/curves.csv",
        threads="results/threads.csv",
        speedups="results/speedups.csv",
        table="results/table.csv",
        jobs="results/jobs.csv",
        skipped="results/skipped.json",
        paper=PAPER_RESULTS,
    output:
        report(
            "reports/report.html",
            caption="../report/report_html.rst",
            category="Report",
        ),
    log:
        "logs/report/report_html.log",
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
