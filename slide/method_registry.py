"""The one method registry: every method's name, command, device, label, colour and hyperparameter schema.

As ann-benchmarks keeps each algorithm's configuration beside its code, each adapter package holds a
JSON Schema of its hyperparameters (``slide/engine/config.schema.json``, ``baselines/tf/...``,
``baselines/torch/...``) whose ``x-methods`` list declares the methods it runs and ``x-command`` the
module run with ``python -m``. The keys every method shares (hidden, batch_size, lr, eval_every)
are declared once, in ``slide/shared_config.schema.json``, and merged in front of each schema; a
method's schema may narrow a shared key (SLIDE caps lr at 10). A sampled-softmax method adds its
schema's ``$defs/sampled`` properties.

Everything else reads this module: the adapters' ``DEFAULTS`` and ``--set`` validation
(:meth:`MethodSpec.check`), the pipeline's commands (:mod:`slide.pipeline.methods`), the report's
labels and colours (:mod:`slide.report.style`), the argparse choices of the trainers, and the
tests that hold the Snakemake schema's method enums to it. (``slide.data.registry`` is the
*dataset* registry.)
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import numbers
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from .errors import ConfigError

#: The folder holding the ``slide`` and ``baselines`` packages.
ROOT = Path(__file__).resolve().parent.parent
SHARED_SCHEMA = "slide/shared_config.schema.json"
#: The adapters' schemas, in display order (figures, tables, ``--help``).
SCHEMA_FILES = ("slide/engine/config.schema.json", "baselines/tf/config.schema.json",
                "baselines/torch/config.schema.json")


@cache
def load_json(relpath: str) -> dict:
    """A schema file, by its path below :data:`ROOT` (read once)."""
    return json.loads((ROOT / relpath).read_text(encoding="utf-8"))


#: What a method's schema may not restate for a shared key: one default and one type for every method.
_SHARED_ONLY = ("default", "type", "oneOf", "enum")


def compose_schema(schema_file: str, loss: str | None) -> dict:
    """The complete JSON Schema of one method's configuration: the shared keys, then the file's
    ``properties`` (a shared key named again is narrowed, not replaced), then ``$defs/<loss>``.

    Raises
    ------
    ConfigError
        when the file gives a shared key a default or type of its own.
    """
    source = load_json(schema_file)
    props = copy.deepcopy(load_json(SHARED_SCHEMA)["properties"])
    extra = source.get("$defs", {}).get(loss, {}).get("properties", {}) if loss else {}
    for key, prop in {**source.get("properties", {}), **extra}.items():
        if key in props:
            redefined = [k for k in _SHARED_ONLY if k in prop]
            if redefined:
                raise ConfigError(f"{schema_file}: {key} is shared by every method ({SHARED_SCHEMA}); a method's "
                                  f"schema may narrow it, not give it its own {' or '.join(redefined)}")
        props[key] = {**props[key], **prop} if key in props else copy.deepcopy(prop)
    return {"$schema": source["$schema"], "title": source.get("title", schema_file), "type": "object",
            "properties": props, "required": list(props), "additionalProperties": False}


def shared_defaults() -> dict:
    """The shared keys with their one default each."""
    return {k: copy.deepcopy(p["default"]) for k, p in load_json(SHARED_SCHEMA)["properties"].items()}


# ---------------------------------------------------------------- validation
def _is_integer(_checker, value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(_checker, value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


@cache
def _validator_class():
    from jsonschema import Draft202012Validator, validators

    # NumPy integers are integers, 2.0 is not, booleans are neither, NaN and inf are not numbers
    checker = Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
    return validators.extend(Draft202012Validator, type_checker=checker)


def _types(prop: dict) -> set:
    types = prop.get("type", [])
    out = {types} if isinstance(types, str) else set(types)
    for alt in prop.get("oneOf", ()):
        out |= _types(alt)
    return out


def _items(prop: dict) -> dict:
    return prop.get("items") or next((a["items"] for a in prop.get("oneOf", ()) if "items" in a), {})


def _fmt(x) -> str:
    return f"{x:g}"


def must(prop: dict) -> str:
    """What a key's value must be, in words, from its schema (``x-must`` when words are given)."""
    if "x-must" in prop:
        return prop["x-must"]
    if "enum" in prop:
        return "one of " + ", ".join(map(str, prop["enum"]))
    types = _types(prop)
    if "boolean" in types:
        text = "true or false"
    elif "integer" in types:
        text = f"an integer >= {_fmt(prop.get('minimum', 0))}"
        if "maximum" in prop:
            text = f"an integer in [{_fmt(prop.get('minimum', 0))}, {_fmt(prop['maximum'])}]"
    else:
        lo_open = "exclusiveMinimum" in prop
        lo = prop.get("exclusiveMinimum", prop.get("minimum"))
        hi = prop.get("maximum")
        if lo is not None and hi is not None:
            text = f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
        elif lo is not None:
            text = "positive" if lo_open and lo == 0 else f"{'>' if lo_open else '>='} {_fmt(lo)}"
        else:
            text = "a number"
    return text + (" or null" if "null" in types else "")


def _normalise(value, prop: dict):
    """NumPy and Python scalars to ``int``/``float`` as the schema types them, lists to lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_normalise(v, _items(prop)) for v in value]
    if isinstance(value, numbers.Integral) and "integer" in _types(prop):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def check_config(schema: dict, config: dict) -> dict:
    """``config`` checked against ``schema`` (every key present, none unknown, each in its range);
    returned with normalised types (``hidden: 128`` -> ``[128]``).

    Raises
    ------
    ConfigError
        one line naming the first offending key, e.g. ``lr must be in (0, 10], got 11``.
    """
    props = schema["properties"]
    missing = sorted(set(props) - set(config))
    if missing:
        raise ConfigError(f"missing configuration keys: {missing}")
    unknown = sorted(set(config) - set(props))
    if unknown:
        raise ConfigError(f"unknown configuration keys: {unknown}")
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    order = list(props)
    errors = [e for e in _validator_class()(schema).iter_errors(plain) if e.path]
    if errors:
        key = min((e.path[0] for e in errors), key=order.index)
        raise ConfigError(f"{key} must be {must(props[key])}, got {config[key]!r}")
    out = {}
    for key, prop in props.items():
        value = config[key]
        if prop.get("x-scalar-as-list") and not isinstance(value, (list, tuple)):
            value = [value]
        out[key] = _normalise(value, prop)
    return out


# ---------------------------------------------------------------- the methods
@dataclass(frozen=True)
class MethodSpec:
    """One method, as declared in its adapter's schema file."""

    name: str          # recorded in run.json, used in the pipeline's paths and configuration
    label: str         # figures and tables
    colour: str
    module: str        # run with ``python -m``
    args: tuple        # after ``train``/``bench``: selects the method within the module
    loss: str | None   # full | sampled (None: SLIDE, which samples by LSH)
    device: str        # cpu | gpu
    adapter: str       # ``module:Class`` of its :class:`slide.adapter.Method`
    schema_file: str   # below :data:`ROOT`

    @cached_property
    def schema(self) -> dict:
        return compose_schema(self.schema_file, self.loss)

    @property
    def defaults(self) -> dict:
        """Every key with its default (a fresh copy)."""
        return {k: copy.deepcopy(p["default"]) for k, p in self.schema["properties"].items()}

    def choices(self, key: str) -> tuple:
        """The allowed values of an enum key."""
        return tuple(self.schema["properties"][key]["enum"])

    def check(self, config: dict) -> dict:
        """:func:`check_config` against this method's schema."""
        return check_config(self.schema, config)

    def argv(self, action: str) -> list[str]:
        """``python`` arguments of ``action`` (train|bench), e.g. ``-m baselines.tf train --loss full
        --device cpu``."""
        return ["-m", self.module, action, *self.args]

    def adapter_class(self):
        """The adapter class (imports its module; the frameworks themselves load lazily)."""
        module, _, cls = self.adapter.partition(":")
        return getattr(importlib.import_module(module), cls)


def _load() -> dict:
    out = {}
    for path in SCHEMA_FILES:
        if not (ROOT / path).is_file():  # an adapter package not installed beside slide (its methods cannot run)
            continue
        source = load_json(path)
        for m in source["x-methods"]:
            out[m["name"]] = MethodSpec(m["name"], m["label"], m["colour"], source["x-command"], tuple(m["args"]),
                                        m["loss"], m["device"], m["adapter"], path)
    return out


#: name -> :class:`MethodSpec`, in display order.
REGISTRY: dict[str, MethodSpec] = _load()
METHOD_NAMES = tuple(REGISTRY)
LOSSES = tuple(dict.fromkeys(s.loss for s in REGISTRY.values() if s.loss))
DEVICES = tuple(dict.fromkeys(s.device for s in REGISTRY.values()))


def method_spec(name: str) -> MethodSpec:
    """The method called ``name``, or a one-line ConfigError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose from {list(METHOD_NAMES)}") from None


__all__ = ["MethodSpec", "REGISTRY", "METHOD_NAMES", "LOSSES", "DEVICES", "method_spec", "check_config",
           "compose_schema", "shared_defaults", "must", "SCHEMA_FILES", "SHARED_SCHEMA"]
