"""The method registry (slide/method_registry.py) and everything that must list exactly its methods.

Each method is declared once, beside its adapter, in a JSON Schema of its hyperparameters; these
tests fail when a schema's own defaults or presets do not validate, when a bad value is not a
one-line error naming its key, or when a copy of the method list (argparse choices, the Snakemake
schema's enums, the pipeline's commands, the report's labels and colours) drifts from the registry.
"""

from __future__ import annotations

import fnmatch
import importlib
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from jsonschema import Draft202012Validator

from slide.errors import ConfigError
from slide.method_registry import (DEVICES, LOSSES, METHOD_NAMES, REGISTRY, ROOT, SCHEMA_FILES, SHARED_SCHEMA,
                                   load_json, method_spec)

REPO = Path(__file__).resolve().parent.parent
SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]


# ---------------------------------------------------------------- each method's schema
@pytest.mark.parametrize("path", [SHARED_SCHEMA, *SCHEMA_FILES])
def test_schema_files_are_json_schemas(path):
    Draft202012Validator.check_schema(load_json(path))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_schema_is_complete_and_validates_its_defaults(spec):
    Draft202012Validator.check_schema(spec.schema)
    for key, prop in spec.schema["properties"].items():
        assert "default" in prop and prop.get("description"), f"{spec.name}: {key} lacks a default or description"
    assert spec.check(spec.defaults) == spec.defaults


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_adapter_takes_defaults_from_the_registry_and_its_presets_validate(spec):
    cls = spec.adapter_class()
    assert cls.__new__(cls).name == spec.name
    assert cls.DEFAULTS == spec.defaults
    assert set(cls.PRESETS) == {"delicious-200k", "amazon-670k"}
    for preset in cls.PRESETS:
        spec.check(cls.resolve_config(preset))


def test_slide_presets_pass_the_cross_key_rules_too():
    from slide.engine.presets import DEFAULTS, PRESETS, validate

    assert DEFAULTS == method_spec("slide").defaults
    for preset in PRESETS:
        validate({**DEFAULTS, **PRESETS[preset]})


def _bad_values(prop: dict) -> list:
    """A wrong type, and each bound crossed, for one key's schema."""
    out = ["bogus"]
    types = {prop["type"]} if isinstance(prop.get("type"), str) else set(prop.get("type", ()))
    if "integer" in types:
        out.append(2.5)
    if "minimum" in prop:
        out.append(prop["minimum"] - 1)
    if "exclusiveMinimum" in prop:
        out.append(prop["exclusiveMinimum"])
    if "maximum" in prop:
        out.append(prop["maximum"] + 1)
    if "boolean" in types:
        out.append(1)
    return out


CASES = [(s.name, key, bad) for s in SPECS for key, prop in s.schema["properties"].items() for bad in _bad_values(prop)]


@pytest.mark.parametrize("name, key, bad", CASES)
def test_a_bad_value_is_one_line_naming_the_key(name, key, bad):
    spec = method_spec(name)
    with pytest.raises(ConfigError) as err:
        spec.check({**spec.defaults, key: bad})
    message = str(err.value)
    assert message.startswith(f"{key} must be ") and message.endswith(f"got {bad!r}") and "\n" not in message


@pytest.mark.parametrize("name, key, value, message", [
    ("slide", "lr", 11, "lr must be in (0, 10], got 11"),
    ("slide", "K", 0, "K must be an integer >= 1, got 0"),
    ("slide", "hash", "md5", "hash must be one of simhash, wta, dwta, minhash, got 'md5'"),
    ("slide", "decay", -1, "decay must be in [0, 10], got -1"),
    ("slide", "min_active", -1, "min_active must be an integer >= 0 or null, got -1"),
    ("tf-full-cpu", "lr", -1.0, "lr must be positive, got -1.0"),
    ("torch-sampled-cpu", "logq", "no", "logq must be true or false, got 'no'"),
    ("tf-sampled-gpu", "sample_fraction", 0, "sample_fraction must be in (0, 1], got 0"),
])
def test_messages(name, key, value, message):
    spec = method_spec(name)
    with pytest.raises(ConfigError) as err:
        spec.check({**spec.defaults, key: value})
    assert str(err.value) == message


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_normalisation_and_unknown_or_missing_keys(spec):
    config = {**spec.defaults, "hidden": np.int64(64), "batch_size": np.int32(32), "lr": 1}
    out = spec.check(config)
    assert out["hidden"] == [64] and type(out["hidden"][0]) is int
    assert type(out["batch_size"]) is int and type(out["lr"]) is float and out["lr"] == 1.0
    assert spec.check({**spec.defaults, "hidden": (32, 16)})["hidden"] == [32, 16]
    for bad in (True, 2.0, float("nan")):
        with pytest.raises(ConfigError, match="batch_size must be"):
            spec.check({**spec.defaults, "batch_size": bad})
    with pytest.raises(ConfigError, match=r"unknown configuration keys: \['bogus'\]"):
        spec.check({**spec.defaults, "bogus": 1})
    with pytest.raises(ConfigError, match=r"missing configuration keys: \['lr'\]"):
        spec.check({k: v for k, v in spec.defaults.items() if k != "lr"})


def test_shared_keys_have_one_default_everywhere():
    from slide.adapter import SHARED_DEFAULTS

    assert SHARED_DEFAULTS == {"hidden": [128], "batch_size": 128, "lr": 1e-3, "eval_every": 0}
    for spec in SPECS:
        assert list(spec.defaults)[:4] == list(SHARED_DEFAULTS)
        assert {k: spec.defaults[k] for k in SHARED_DEFAULTS} == SHARED_DEFAULTS


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_eval_every_is_the_loops_one_setting_for_every_method(spec):
    """One default and one paper cadence for every method, and ``--set eval_every=N`` reaches the loop."""
    from slide.adapter import PAPER_SHARED, SHARED_DEFAULTS, parse_overrides

    cls = spec.adapter_class()
    assert cls.resolve_config()["eval_every"] == SHARED_DEFAULTS["eval_every"] == 0
    for preset in cls.PRESETS:
        assert cls.resolve_config(preset)["eval_every"] == PAPER_SHARED["eval_every"] == 50
    for preset in (None, *cls.PRESETS):  # the workflow's presets pass --set eval_every=N, with or without --preset
        method = cls.__new__(cls)
        method.config = spec.check(cls.resolve_config(preset, parse_overrides(["eval_every=7"])))
        assert method.eval_every == 7
    with pytest.raises(ConfigError, match="eval_every must be an integer >= 0"):
        spec.check(cls.resolve_config(overrides={"eval_every": -1}))


@pytest.mark.parametrize("where", ["properties", "$defs"])
@pytest.mark.parametrize("restated", [{"default": 50}, {"type": "number"}, {"enum": [0, 50]}])
def test_a_method_schema_may_narrow_a_shared_key_but_not_redefine_it(monkeypatch, where, restated):
    from slide import method_registry

    def schema(prop):
        props = {"eval_every": prop}
        if where == "$defs":
            return {"$schema": load_json(SHARED_SCHEMA)["$schema"], "$defs": {"sampled": {"properties": props}}}
        return {"$schema": load_json(SHARED_SCHEMA)["$schema"], "properties": props}

    files = {SHARED_SCHEMA: load_json(SHARED_SCHEMA)}
    monkeypatch.setattr(method_registry, "load_json", lambda path: files[path])
    files["m.json"] = schema({"maximum": 1000})
    narrowed = method_registry.compose_schema("m.json", "sampled")["properties"]["eval_every"]
    assert narrowed["maximum"] == 1000 and narrowed["default"] == 0 and narrowed["type"] == "integer"
    files["m.json"] = schema({"maximum": 1000, **restated})
    with pytest.raises(ConfigError, match=f"m.json: eval_every is shared by every method .*its own {next(iter(restated))}"):
        method_registry.compose_schema("m.json", "sampled")


def test_unknown_method_is_one_line():
    with pytest.raises(ConfigError, match="unknown method 'nope'; choose from"):
        method_spec("nope")


# ---------------------------------------------------------------- names defined once
def test_engine_names_come_from_the_schema_in_their_saved_order():
    from slide.engine import hashing, sampling, tables
    from slide.engine.presets import INFERENCES

    slide = method_spec("slide")
    # integer codes are indices into these (saved in tables' meta): reordering breaks old checkpoints
    assert hashing.KINDS == slide.choices("hash") == ("simhash", "wta", "dwta", "minhash")
    assert tables.INSERTIONS == slide.choices("insertion") == ("fifo", "reservoir")
    assert sampling.MODES == slide.choices("sampling") == ("vanilla", "topk", "threshold")
    assert (sampling.MODE_VANILLA, sampling.MODE_TOPK, sampling.MODE_THRESHOLD) == (0, 1, 2)
    assert INFERENCES == slide.choices("inference")


def test_baselines_take_their_names_from_the_registry():
    """No second list of enum values or devices in the baselines' modules: the schemas hold them."""
    for module in ("baselines.tf.model", "baselines.torch.model"):
        names = vars(importlib.import_module(module))
        assert not {"SAMPLERS", "LABEL_MODES", "PADDINGS", "INPUTS", "POSITIVES", "METHOD_NAMES"} & names.keys()
    for module in ("baselines.tf.device", "baselines.torch.device"):
        assert importlib.import_module(module).DEVICES is DEVICES


# ---------------------------------------------------------------- every copy of the method list
def test_registry_methods():
    assert METHOD_NAMES == ("slide", "tf-full-cpu", "tf-sampled-cpu", "tf-full-gpu", "tf-sampled-gpu",
                            "torch-full-cpu", "torch-sampled-cpu", "torch-full-gpu", "torch-sampled-gpu")
    assert LOSSES == ("full", "sampled") and DEVICES == ("cpu", "gpu")
    for spec in SPECS[1:]:
        assert spec.name == f"{spec.module.split('.')[-1]}-{spec.loss}-{spec.device}"
        assert spec.args == ("--loss", spec.loss, "--device", spec.device)


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_argparse_choices_are_the_registry(framework):
    parser = importlib.import_module(f"baselines.{framework}.__main__").build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices)
    for command in ("train", "bench"):
        opts = {a.dest: a.choices for a in sub.choices[command]._actions if a.choices}
        assert tuple(opts["loss"]) == LOSSES and tuple(opts["device"]) == DEVICES
    classes = importlib.import_module(f"baselines.{framework}.method").METHODS
    ours = {n: s for n, s in REGISTRY.items() if s.module == f"baselines.{framework}"}
    assert set(classes) == set(ours) and all(classes[n] is s.adapter_class() for n, s in ours.items())


def test_compare_and_pipeline_commands_are_the_registry():
    from slide.compare import METHOD_COMMANDS
    from slide.pipeline.methods import GPU_METHODS, METHODS, TORCH_METHODS, method_command

    assert tuple(METHOD_COMMANDS) == tuple(METHODS) == METHOD_NAMES
    assert GPU_METHODS == tuple(n for n in METHOD_NAMES if n.endswith("-gpu"))
    assert TORCH_METHODS == tuple(n for n in METHOD_NAMES if n.startswith("torch-"))
    assert method_command("slide", "train") == "python -m slide.cli train"
    assert method_command("torch-sampled-gpu", "bench") == "python -m baselines.torch bench --loss sampled --device gpu"


def test_report_labels_and_colours_are_the_registry():
    from slide.report.style import METHOD_COLORS, METHOD_LABELS, METHODS

    assert METHODS == tuple(METHOD_COLORS) == tuple(METHOD_LABELS) == METHOD_NAMES
    assert len(set(METHOD_COLORS.values())) == len(METHOD_NAMES)
    assert len(set(METHOD_LABELS.values())) == len(METHOD_NAMES)


def test_snakemake_schema_enums_are_the_registry():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert tuple(schema["$defs"]["method_names"]["enum"]) == METHOD_NAMES
    assert tuple(schema["properties"]["methods"]["properties"]) == METHOD_NAMES
    experiments = schema["properties"]["experiments"]["properties"]
    sampled = tuple(n for n, s in REGISTRY.items() if s.loss == "sampled")
    assert tuple(experiments["sampled_softmax"]["properties"]["methods"]["items"]["enum"]) == sampled
    cpu = tuple(n for n, s in REGISTRY.items() if s.device == "cpu")
    assert tuple(experiments["thread_scaling"]["properties"]["methods"]["items"]["enum"]) == cpu


def test_schema_files_are_package_data():
    assert ROOT == REPO
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for path in (SHARED_SCHEMA, *SCHEMA_FILES):
        package, _, rest = path.partition("/")
        assert any(fnmatch.fnmatch(rest, pattern) for pattern in package_data.get(package, ())), path
