"""The pipeline configuration: one JSON schema (schemas/config.schema.yaml) documents, types and
gives the default of every key. :func:`validate` fills defaults and rejects unknown or mistyped
keys with a message naming the key; the package takes its defaults from the same schema.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range."""


@lru_cache(maxsize=1)
def load_schema() -> dict:
    import yaml

    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _fill_defaults(instance: dict, schema: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


def _describe(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return (f"unknown config key(s) {', '.join(unknown)} under {where}; "
                f"allowed: {', '.join(allowed)}")
    return f"config key {where}: {error.message}"


def validate(config: dict) -> dict:
    """Fill defaults in place and validate; returns the config. Raises ConfigError."""
    import jsonschema

    schema = load_schema()
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    return config


def defaults(*section: str) -> dict:
    """Default values of one section, e.g. ``defaults("dataset", "synthetic")``."""
    config: dict = {}
    validate(config)
    for key in section:
        config = config[key]
    return config


def load(path: str | Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as handle:
        return validate(yaml.safe_load(handle) or {})


def _get(config: dict, dotted: str):
    value = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def missing_paths(config: dict) -> list[str]:
    """Keys that must name a file for this config but are empty (dataset.kind=files)."""
    if config["dataset"]["kind"] != "files":
        return []
    needed = ["dataset.queries.test", "dataset.qrels.test"]
    needed.append("dataset.videos.index" if config["dataset"]["videos"]["layout"] == "index" else "dataset.videos.dir")
    if config["dataset"]["queries"]["train"]:
        needed.append("dataset.qrels.train")
    if config["first_stage"]["method"] == "bm25":
        needed.append("dataset.asr")
    else:
        needed += [f"first_stage.files.{split}" for split in ("train", "test")
                   if split == "test" or config["dataset"]["queries"]["train"]]
    return [key for key in needed if not _get(config, key)]
