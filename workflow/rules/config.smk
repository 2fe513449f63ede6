# Presets: workflow/config/presets/<name>.yaml holds a full configuration; the keys given in
# workflow/config/config.yaml, --configfile and --config are merged over it (mappings key by
# key, everything else replaced), so `--config preset=paper seeds=[0,1]` changes only the seeds.
import copy
from pathlib import Path

import yaml


def _deep_merge(base, over):
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve(node, schema):
    ref = node.get("$ref") if isinstance(node, dict) else None
    if ref:
        target = schema
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node if isinstance(node, dict) else {}


def _scalar(text, types):
    """Snakemake reads nested --config values as strings; give them the type the schema wants."""
    t = text.strip()
    if "null" in types and t in ("null", "~", "None"):
        return None
    if "boolean" in types and t.lower() in ("true", "false"):
        return t.lower() == "true"
    if "integer" in types:
        try:
            return int(t)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(t)
        except ValueError:
            pass
    return text


def coerce(value, node, schema):
    """Convert string scalars in ``value`` where the schema ``node`` expects another type."""
    node = _resolve(node, schema)
    if isinstance(value, dict):
        props = node.get("properties", {})
        return {k: coerce(v, props.get(k, {}), schema) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce(v, node.get("items", {}), schema) for v in value]
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(value, str) and types and "string" not in types:
        return _scalar(value, types)
    return value


def preset_names(basedir):
    folder = Path(basedir) / "workflow" / "config" / "presets"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_preset(cfg, basedir):
    """Replace ``cfg`` in place by the chosen preset with ``cfg``'s own keys merged over it."""
    name = cfg.get("preset") or "default"
    names = preset_names(basedir)
    if not isinstance(name, str) or name not in names:
        raise ValueError(
            f"config key 'preset': unknown preset {name!r}; choose one of {', '.join(names)} "
            "(workflow/config/presets/<name>.yaml)"
        )
    path = Path(basedir) / "workflow" / "config" / "presets" / f"{name}.yaml"
    preset = yaml.safe_load(path.read_text()) or {}
    if not isinstance(preset, dict):
        raise ValueError(f"{path}: a preset must be a mapping")
    schema = yaml.safe_load(
        (Path(basedir) / "workflow" / "schemas" / "config.schema.yaml").read_text()
    )
    merged = _deep_merge(preset, coerce(dict(cfg), schema, schema))
    merged["preset"] = name
    cfg.clear()
    cfg.update(merged)


def _schema_error_line(err):
    """One line for a jsonschema error: the config key it concerns and what is wrong."""
    import difflib

    path = ""
    for part in err.absolute_path:
        path += (
            f"[{part}]"
            if isinstance(part, int)
            else (f".{part}" if path else str(part))
        )
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(known))
        parts = []
        for key in extra:
            full = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"config key '{full}': unknown key{hint}")
        if parts:
            where = f" in '{path}'" if path else ""
            return "; ".join(parts) + f"; known keys{where}: {', '.join(known)}"
    msg = " ".join(str(err.message).split())
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"config key '{path or '(top level)'}': {msg}"


def validate_config(cfg, basedir):
    """Validate ``cfg`` against the schema; a violation is one line naming the key, not a dump.

    The schema check that fills in defaults (``snakemake.utils.validate``) runs afterwards.
    """
    import jsonschema

    schema_path = Path(basedir) / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ValueError(
            f"{_schema_error_line(best)} (preset {cfg.get('preset')!r} with --config and "
            f"--configfile merged over it; schema: {schema_path.name})"
        )
