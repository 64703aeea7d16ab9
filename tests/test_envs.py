"""The conda environments pin exactly what pyproject.toml pins."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pins(requirements):
    result = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", requirement.strip())
        assert match, f"not an exact pin: {requirement!r}"
        result[match.group(1).lower().replace("_", "-")] = match.group(2)
    return result


def test_env_files_match_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = pins(project["dependencies"])
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files
    for path in env_files:
        env = yaml.safe_load(path.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        found = pins(pip)
        for name, version in found.items():
            assert expected.get(name) == version, f"{path.name}: {name}=={version}, pyproject pins {expected.get(name)}"
        assert "python=3.11" in env["dependencies"], path.name


def test_every_rule_names_a_pinned_env():
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        envs = re.findall(r'^\s+conda:\s*\n\s+"\.\./envs/(\w+)\.yaml"', text, flags=re.M)
        assert len(envs) == len(rules), f"{smk.name}: {len(rules)} rules, {len(envs)} conda: directives"
        for env in envs:
            assert (REPO / "envs" / f"{env}.yaml").exists()
