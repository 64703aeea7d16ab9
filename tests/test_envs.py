"""One environment per role (envs/*.yaml), pinned exactly, equal to pyproject.toml's pins, resolvable
from PyPI, and holding what the scripts of its rules import."""

import ast
import functools
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ENV_NAMES = ("rankvideo", "train", "vllm")


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements):
    result = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", requirement.strip())
        assert match, f"not an exact pin: {requirement!r}"
        assert norm(match.group(1)) not in result, f"pinned twice: {requirement!r}"
        result[norm(match.group(1))] = match.group(2)
    return result


def env_file(name):
    env = yaml.safe_load((REPO / "envs" / f"{name}.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    return python.split("=", 1)[1], pins(pip), pip


def expected_pins(name):
    """What pyproject.toml says each environment holds."""
    project = PYPROJECT["project"]
    if name == "rankvideo":
        return pins(project["dependencies"])
    if name == "train":
        return pins(project["dependencies"] + project["optional-dependencies"]["train"])
    return pins(PYPROJECT["dependency-groups"][name])


def test_env_files_are_the_roles():
    assert sorted(p.stem for p in (REPO / "envs").glob("*.yaml")) == sorted(ENV_NAMES)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_file_matches_pyproject_pins(name):
    python, found, _ = env_file(name)
    assert found == expected_pins(name), f"envs/{name}.yaml differs from pyproject.toml"
    assert python == ("3.12" if name == "vllm" else "3.11")


def test_extras_are_exact_pins():
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items():
        pins([r for r in requirements if not r.startswith("rankvideo[")])
    assert "rankvideo[train]" in PYPROJECT["project"]["optional-dependencies"]["test"]


def test_trl_is_not_pinned():
    """Stage 1 keeps its hand-masked labels (see README); nothing imports trl."""
    for name in ENV_NAMES:
        assert "trl" not in env_file(name)[1]


# ----------------------------------------------------------------------------- rules → envs

CONDA_VLLM = re.compile(
    r'"\.\./envs/vllm\.yaml" if config\["(\w+)"\]\["backend"\] == "vllm" else "\.\./envs/rankvideo\.yaml"')


def rules():
    """{rule: (script path, [env names], backend section or None)} of every rules/*.smk and the Snakefile."""
    found = {}
    for smk in [*sorted((REPO / "rules").glob("*.smk")), REPO / "Snakefile"]:
        base = smk.parent
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            conda = re.search(r"^\s+conda:\s*\n\s+(.+)$", block, flags=re.M)
            script = re.search(r'^\s+script:\s*\n\s+"([^"]+)"', block, flags=re.M)
            if conda is None:
                assert "run:" not in block and "shell:" not in block, f"rule {name} runs code outside any env"
                continue
            line = conda.group(1).strip()
            vllm = CONDA_VLLM.fullmatch(line)
            if vllm:
                envs, section = ["rankvideo", "vllm"], vllm.group(1)
            else:
                env = re.fullmatch(r'"(?:\.\./)?envs/(\w+)\.yaml"', line)
                assert env, f"rule {name}: unexpected conda: {line}"
                envs, section = [env.group(1)], None
            found[name] = ((base / script.group(1)).resolve() if script else None, envs, section)
    return found


def test_every_rule_names_the_env_of_its_role():
    found = rules()
    model_steps = {"captions": "captions", "teacher_labels": "teacher", "describe": "descriptions",
                   "rerank_shard": "rerank"}
    for name, (script, envs, section) in found.items():
        assert script is not None and script.exists(), name
        for env in envs:
            assert (REPO / "envs" / f"{env}.yaml").exists()
        if name in model_steps:
            assert section == model_steps[name], f"rule {name}: vLLM env chosen by config[{section!r}]"
        elif name in ("train_stage1", "copy_pretrain", "train_stage2"):
            assert envs == ["train"], name
        else:
            assert envs == ["rankvideo"], name
    assert set(model_steps) <= set(found)


# ----------------------------------------------------------------------------- imports → envs

STDLIB = set(sys.stdlib_module_names) | {"__future__"}
# import name → distribution, for modules not installed in the test interpreter
IMPORT_NAMES = {"vllm": "vllm"}
# Distributions an environment lacks on purpose. The walk below follows every import, lazy ones too,
# module by module (not function by function), so it reaches more than a rule runs: each entry names
# the only importer of the distribution and why the env's rules never call it. The test fails when an
# entry is no longer needed; a new lazy import of one of these in another place is not caught.
ABSENT_BY_DESIGN = {
    # rankvideo.backends.vllm only; rankvideo.pipeline.run_step runs backend: vllm steps in envs/vllm.yaml
    ("rankvideo", "vllm"): "rankvideo.backends.vllm",
    ("train", "vllm"): "rankvideo.backends.vllm",
    # rankvideo.training.common's LoRA setup (in a function); the CPU/HF and vLLM rules reach that module
    # only for checkpoint hashes and records (launch.package_env, training.common.file_sha256)
    ("rankvideo", "peft"): ("rankvideo.training.common.prepare_model", "rankvideo.training.common.merge_adapters"),
    ("vllm", "peft"): ("rankvideo.training.common.prepare_model", "rankvideo.training.common.merge_adapters"),
    # rankvideo.evaluation.evaluate, imported (in a function) by rerank.gather — rule gather_rerank, envs/rankvideo.yaml;
    # the vLLM rerank step runs rerank.run_shard
    ("vllm", "pandas"): ("rankvideo.evaluation.evaluate", "rankvideo.evaluation.metrics"),  # metrics: rules evaluate/metrics
    ("vllm", "pytrec-eval-terrier"): "rankvideo.evaluation.evaluate",
}


def module_file(module):
    path = REPO / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(path, package):
    """Top-level names of every import (module level and inside functions) of one file; relative
    imports resolved against ``package``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(parts + ([node.module] if node.module else []))
                names.add(stem)
                names.update(f"{stem}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "rankvideo")
    return names


def third_party_imports(script):
    """Third-party top-level modules that a script reaches through the rankvideo modules it imports
    (every import, lazy ones too: a module-level reachability, so an over-approximation)."""
    seen, todo, external = set(), [("__main__", script)], set()
    while todo:
        package, path = todo.pop()
        for name in imports_of(path, package):
            top = name.split(".")[0]
            if top == "rankvideo":
                target = module_file(name)
                if target is not None and target not in seen:
                    seen.add(target)
                    todo.append((name if target.name == "__init__.py" else name.rsplit(".", 1)[0], target))
            elif top not in STDLIB and name:
                external.add(top)
    return external


@functools.cache
def installed_modules():
    return importlib.metadata.packages_distributions()


def distribution(module):
    found = installed_modules().get(module)
    if found:
        return norm(found[0])
    assert module in IMPORT_NAMES, f"no distribution known for import {module!r}"
    return IMPORT_NAMES[module]


def test_each_env_holds_what_its_rules_import():
    """Every third-party module that a rule's script reaches is pinned directly in each env the rule
    may run in (transitive installs do not count: what we import, we pin)."""
    used = set()
    for name, (script, envs, _) in rules().items():
        needed = {distribution(module) for module in third_party_imports(script)}
        assert needed, name
        for env in envs:
            pinned = set(env_file(env)[1])
            for dist in needed - pinned:
                assert (env, dist) in ABSENT_BY_DESIGN, f"rule {name} imports {dist}, not pinned in envs/{env}.yaml"
                used.add((env, dist))
    assert used == set(ABSENT_BY_DESIGN), "stale ABSENT_BY_DESIGN entries"


TOP_MODULE = {"vllm": "vllm", "peft": "peft", "pandas": "pandas", "pytrec-eval-terrier": "pytrec_eval"}


def test_absent_by_design_names_the_only_importer():
    """Each ABSENT_BY_DESIGN entry names the one module (and function) of the package importing it."""
    for (env, dist), places in ABSENT_BY_DESIGN.items():
        top = TOP_MODULE[dist]
        importers = {}
        for path in (REPO / "rankvideo").rglob("*.py"):
            tree = ast.parse(path.read_text())
            functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                if any(name.split(".")[0] == top for name in names):
                    inside = [f.name for f in functions if f.lineno <= node.lineno <= f.end_lineno]
                    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                    importers.setdefault(module, set()).update(inside or ["<module>"])
        places = (places,) if isinstance(places, str) else places
        modules: dict[str, set[str]] = {}  # module -> the functions importing it ({} for a module-level import)
        for where in places:
            module = where if module_file(where) else where.rsplit(".", 1)[0]
            modules.setdefault(module, set()).update(set() if module == where else {where.rsplit(".", 1)[1]})
        assert set(importers) == set(modules), (dist, importers)
        for module, functions in modules.items():
            if functions:
                assert importers[module] == functions, (dist, importers)


def test_vllm_steps_reach_vllm_and_training_reaches_peft():
    """The import walk is not vacuous: it sees the lazy imports that matter per role."""
    found = rules()
    assert "vllm" in third_party_imports(found["rerank_shard"][0])
    assert "peft" in third_party_imports(found["train_stage2"][0])
    # QLoRA: transformers imports bitsandbytes itself, so no script imports it; the train env pins it
    assert "bitsandbytes" in env_file("train")[1]


# ----------------------------------------------------------------------------- PyPI

PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)] + ["manylinux2014_x86_64"]


def pypi_reachable():
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def resolve(name):
    """pip's resolution of one env's pins from PyPI alone (no local config). An env of this Python
    resolves natively (sdists allowed: snakemake needs connection_pool, an sdist); another Python needs
    --platform, hence wheels only, for Linux x86-64 with glibc <= 2.35 — snakemake is left out there
    (same pin, resolved by the other envs). The index serves no separate metadata files (PEP 658), so
    pip would download every wheel whole (torch and the CUDA libraries: gigabytes, and CI once failed
    on a dropped connection mid-wheel); fast-deps reads each wheel's metadata by HTTP range requests."""
    python, wanted, requirements = env_file(name)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
               "--use-feature=fast-deps", "--index-url", "https://pypi.org/simple"]
    if python != f"{sys.version_info.major}.{sys.version_info.minor}":
        wanted = {k: v for k, v in wanted.items() if k != "snakemake"}
        requirements = [r for r in requirements if not r.startswith("snakemake==")]
        command += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                    *[arg for p in PLATFORMS for arg in ("--platform", p)]]
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no local constraints, find-links or extra indexes
    env = {k: v for k, v in env.items() if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL")}
    for _ in range(3):  # a dropped connection is pip's "issue with network connectivity": ask again
        done = subprocess.run(command + requirements, capture_output=True, text=True, env=env, timeout=240)
        if done.returncode == 0 or "network connectivity" not in done.stderr:
            break
    return name, wanted, done


@pytest.mark.slow  # pip resolves two environments against PyPI (about a minute and a half)
def test_every_env_resolves_from_pypi():
    if not pypi_reachable():  # asked here, not at collection: the fast tier never waits on the network
        pytest.skip("pypi.org is not reachable from here")
    assert sys.platform == "linux" and os.uname().machine == "x86_64"  # native resolution = the target
    # envs/train.yaml pins all of envs/rankvideo.yaml's (same Python): a resolution of train's pins,
    # less the train extra's packages, is one of rankvideo's, so rankvideo needs no run of its own
    base, train = env_file("rankvideo"), env_file("train")
    assert base[0] == train[0] and base[1].items() <= train[1].items()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(resolve, ["train", "vllm"]))
    for name, wanted, done in results:
        assert done.returncode == 0, f"envs/{name}.yaml does not resolve from PyPI:\n{done.stderr[-3000:]}"
        installed = {norm(item["metadata"]["name"]): item["metadata"]["version"]
                     for item in json.loads(done.stdout)["install"]}
        for dist, version in wanted.items():
            assert installed.get(dist) == version, (name, dist, installed.get(dist), version)
