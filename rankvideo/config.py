"""The pipeline configuration: one JSON schema (schemas/config.schema.yaml) documents, types and
gives the default of every key; its defaults are the reference method (REFERENCE.md).
:func:`validate` fills defaults and rejects unknown or mistyped keys with a message naming the key;
the package takes its defaults from the same schema.

:func:`resolve` is the one way a configuration becomes effective, for the Snakefile and for

    python -m rankvideo.config show [SECTION_OR_KEY ...] [--configfile F ...] [--config KEY=VALUE ...]

The embedded default ``config/config.yaml`` (the tiny-model demo) applies only when no
``--configfile`` is given: a user's or the paper's config starts from the schema's defaults and never
inherits the demo's settings. Files given are merged in order, then ``--config`` overrides.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

from rankvideo.data import formats

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


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a config file (safe loader); errors name the file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the config file: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys, not {type(data).__name__}")
    return data


def load(path: str | Path) -> dict:
    return validate(read_yaml(path))


def merge(base: dict, update: dict) -> dict:
    """``update`` merged into ``base`` in place, nested mappings key by key (Snakemake's way)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


DEFAULT_CONFIGFILE = Path("config") / "config.yaml"


def resolve(configfiles=(), overrides: dict | None = None, default: str | Path = DEFAULT_CONFIGFILE) -> dict:
    """The effective configuration: the ``configfiles`` merged in order, or ``default`` (the
    embedded demo) when none is given; then ``overrides`` (``--config``); then the schema's
    defaults for every key left out; validated. Raises ConfigError."""
    config: dict = {}
    files = [str(path) for path in configfiles] or [str(default)]
    for path in files:
        merge(config, read_yaml(path))
    merge(config, overrides or {})
    try:
        return validate(config)
    except ConfigError as error:
        raise ConfigError(f"{error}\n  (config files: {', '.join(files)}"
                          f"{'; --config overrides' if overrides else ''})") from None


def parse_overrides(items) -> dict:
    """``KEY=VALUE`` items (dotted keys allowed, values read as YAML) → a nested mapping."""
    import yaml

    overrides: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--config {item!r}: expected KEY=VALUE")
        *parents, last = key.split(".")
        node = overrides
        for parent in parents:
            node = node.setdefault(parent, {})
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        node[last] = parsed
    return overrides


def dump(config: dict) -> str:
    """The configuration as YAML, keys in their order (what ``show`` prints and the pipeline records)."""
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def write(config: dict, path: str | Path) -> None:

    formats.write_text(path, dump(config))


def main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m rankvideo.config",
                                     description="Print the effective pipeline configuration, exactly as the "
                                                 "Snakefile resolves it.")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="the effective configuration as YAML")
    show.add_argument("--configfile", nargs="+", default=[], help="config files, merged in order (as snakemake's)")
    show.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="overrides (dotted keys allowed)")
    show.add_argument("--default", default=str(DEFAULT_CONFIGFILE),
                      help="the embedded default used when no --configfile is given")
    show.add_argument("keys", nargs="*", help="print only these sections or dotted keys (e.g. train_stage2 rerank.video)")
    args = parser.parse_args(argv)
    try:
        config = resolve(args.configfile, parse_overrides(args.config), args.default)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    unknown = [key for key in args.keys if not _has(config, key)]
    if unknown:
        print(f"error: no config key {', '.join(unknown)}", file=sys.stderr)
        return 2
    shown = {key: _get(config, key) for key in args.keys} if args.keys else config
    sys.stdout.write(dump(shown))
    return 0


def _get(config: dict, dotted: str):
    value = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _has(config: dict, dotted: str) -> bool:
    value = config
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


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


if __name__ == "__main__":
    raise SystemExit(main())
