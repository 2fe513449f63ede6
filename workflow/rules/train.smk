# Timed jobs: training runs and thread-scaling benchmarks. Each takes every core given to
# Snakemake and the whole `timed_slot` resource (limit 1, set in workflow/profiles/default), so
# it runs alone. A run's only declared output is run.json, written last: curve.csv (written
# progressively) and the checkpoint model.npz survive a killed job, and the rerun continues
# with --resume. --keep-going records a diverged run as failed instead of failing the job.


rule train:
    input:
        "data/prepared/{dataset}.json",
    output:
        "results/{dataset}/{method}/seed{seed}/run.json",
    log:
        "logs/train/{dataset}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/{method}/seed{seed}.tsv"
    conda:
        "../envs/slide.yaml"
    threads: timed_threads()
    resources:
        timed_slot=1,
        gpu=is_gpu,
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=train_runtime,
    params:
        cmd=train_command,
        out=subpath(output[0], parent=True),
    shell:
        "python -m slide.report.launch --out {params.out} -- {params.cmd} --threads {threads} > {log} 2>&1"


# A variant (bs<n>, frac<f>) of a headline run: the same job one folder deeper.
use rule train as train_variant with:
    output:
        "results/{dataset}/{method}/{variant}/seed{seed}/run.json",
    log:
        "logs/train/{dataset}/{method}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/{method}/{variant}/seed{seed}.tsv"
    params:
        cmd=train_command,
        out=subpath(output[0], parent=True),


rule bench_threads:
    output:
        "results/{dataset}/{method}/threads{nthreads}/seed{seed}/bench.json",
    log:
        "logs/bench/{dataset}/{method}/threads{nthreads}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/{method}/threads{nthreads}/seed{seed}.tsv"
    conda:
        "../envs/slide.yaml"
    threads: timed_threads()
    resources:
        timed_slot=1,
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=rule_runtime("train"),
    params:
        cmd=bench_command,
    shell:
        "python -m slide.report.launch -- {params.cmd} --threads {wildcards.nthreads} > {output}.tmp 2> {log}"
        " && mv {output}.tmp {output}"
