# SLIDE reproduction pipeline: data -> prepare -> train (SLIDE, TensorFlow, PyTorch) -> aggregate
# -> plot -> report.  Run with `snakemake --cores all` (preset `default`), choose another preset
# with `--config preset=NAME` (workflow/config/presets/NAME.yaml).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/workflow/config/config.yaml"


include: "workflow/rules/config.smk"


# The preset is merged under the keys given in config.yaml / --config / --configfile, then the
# result is validated against the schema (which also fills in every default); a violation is one
# line naming the key.
load_preset(config, workflow.basedir)
validate_config(config, workflow.basedir)


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),


# What was left out, why, and where the report is: the last thing on the console.
onsuccess:
    print(
        end_of_run(SKIPPED, FETCH_NAMES, REPORT_HTML, PIPELINE_START),
        file=sys.stderr,
    )


onerror:
    print(
        end_of_run(SKIPPED, FETCH_NAMES, REPORT_HTML, PIPELINE_START),
        file=sys.stderr,
    )
