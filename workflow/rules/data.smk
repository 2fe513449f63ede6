# Data: the real XC files (fetched or placed by hand) or synthetic stand-ins, then the binary
# caches and the shuffled test order (`slide data prepare`).

from slide.data.synth import synth_params


rule fetch:
    output:
        "data/raw/{name}/.verified",
    log:
        "logs/fetch/{name}.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["data"]["mem_mb"],
        runtime=rule_runtime("data"),
    params:
        failed="data/raw/{name}/FETCH_FAILED",
    shell:
        # Downloads, or verifies files placed by hand; a failure is remembered in FETCH_FAILED
        # (the dataset is then left out with a message until the files are placed).
        "if python -m slide.cli data fetch {wildcards.name} --root data --no-progress"
        " > {log} 2>&1; then rm -f {params.failed}; "
        "else tail -n 1 {log} > {params.failed}; exit 1; fi"


rule synth:
    output:
        train="data/synth/{dataset}/train.txt",
        test="data/synth/{dataset}/test.txt",
        meta="data/synth/{dataset}/synth.json",
    log:
        "logs/synth/{dataset}.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["data"]["mem_mb"],
        runtime=rule_runtime("data"),
    params:
        like=lambda wc: DATASETS[wc.dataset]["name"],
        scale=lambda wc: DATASETS[wc.dataset]["cfg"]["scale"],
        seed=lambda wc: DATASETS[wc.dataset]["cfg"]["synth_seed"],
        # a change of the registry's generator parameters regenerates the stand-in
        generator=lambda wc: json.dumps(
            synth_params(DATASETS[wc.dataset]["name"]), sort_keys=True
        ),
        out=subpath(output.train, parent=True),
    shell:
        "python -m slide.cli data synth --like {params.like} --scale {params.scale}"
        " --seed {params.seed} --out {params.out} > {log} 2>&1"


rule prepare:
    input:
        lambda wc: DATASETS[wc.dataset]["inputs"],
    output:
        "data/prepared/{dataset}.json",
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../envs/slide.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["data"]["mem_mb"],
        runtime=rule_runtime("data"),
    params:
        args=prepare_command,
        order_dir=subpath(output[0], strip_suffix=".json"),
    shell:
        "python -m slide.cli data prepare {params.args} --out {params.order_dir}"
        " > {output}.tmp 2> {log} && mv {output}.tmp {output}"
