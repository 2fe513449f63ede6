"""Planning for the Snakemake workflow, importable and testable without Snakemake.

* :mod:`.methods` - the table of methods: each one's trainer module, loss and device.
* :mod:`.plan` - datasets, GPU and PyTorch checks, every run and benchmark, or why it is left out.
* :mod:`.commands` - the trainers' and benchmarks' command lines, the parse-time settings check,
  and the resources of a timed job.

``workflow/rules/common.smk`` builds one :class:`~.plan.Plan` at parse time and keeps only the
input functions that hand its parts to the rules.
"""
