import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: vLLM's own environment (tools/setup_vllm_cpu.sh, make vllm-venv); the vLLM tests skip without it
VLLM_PYTHON = Path(os.environ.get("RANKVIDEO_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON}: run tools/setup_vllm_cpu.sh or make vllm-venv "
                    "(or point RANKVIDEO_VLLM_PYTHON at its python)")
    return VLLM_PYTHON


def pytest_collection_modifyitems(config, items):
    """vllm and slurm tests are slow tests too: `-m "not slow"` (make test) is the fast tier."""
    for item in items:
        if item.get_closest_marker("vllm") or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)


def copy_repo(dest: Path) -> Path:
    """A copy of the working tree as a fresh clone would have it (no results, no caches)."""
    ignore = shutil.ignore_patterns("results", ".snakemake", ".venv", ".venv-vllm", ".cache", "__pycache__", ".pytest_cache",
                                    "*.egg-info", ".git", ".whl")
    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run the real Snakemake of this interpreter's environment in ``workdir``."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, text=True,
                            capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def repo_copy(tmp_path):
    return copy_repo(tmp_path / "repo")


# ----------------------------------------------------------------------------- one finished pipeline run

# the test config's whole DAG: the metrics table, the training-data report, the loss curves
PIPELINE_TARGETS = ("results/metrics.tsv", "results/training_data/report.json", "results/plots/loss_curves.png")
TEST_CONFIG = ("--configfile", "config/test.yaml")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A copy of the repo after one complete local run (`--cores 2`) of config/test.yaml, made once
    per session and shared by every test that reads a finished run. Read only: a test that changes a
    file or runs Snakemake in it takes :func:`copy_finished_run` (same bytes and file times)."""
    repo = copy_repo(tmp_path_factory.mktemp("finished_run") / "repo")
    snakemake(repo, *PIPELINE_TARGETS, *TEST_CONFIG, "--cores", "2", timeout=1500)
    return repo


def copy_finished_run(finished: Path, dest: Path) -> Path:
    """A copy of a finished run that a test may change: files, file times and Snakemake's records
    (.snakemake/), so that Snakemake finds nothing to do in it."""
    shutil.copytree(finished, dest, symlinks=True)
    return dest


# ----------------------------------------------------------------------------- tiny models, built once


class TinyModels:
    """Tiny models (rankvideo.demo.tiny_model) built once per session and argument set: ``vlm(seed=1)``,
    ``text(seed=1)``, ``vlm(seed=3, hidden_size=64)``. The folders are shared: read them, never write
    into them (copy one first)."""

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[tuple, Path] = {}

    def build(self, kind: str, seed: int = 0, **sizes) -> Path:
        from rankvideo.demo import tiny_model

        key = (kind, seed, tuple(sorted(sizes.items())))
        if key not in self.built:
            name = "-".join([f"tiny-{kind}", f"seed{seed}", *(f"{k}{v}" for k, v in sorted(sizes.items()))])
            builder = {"vlm": tiny_model.build_tiny_vlm, "text": tiny_model.build_tiny_text_model}[kind]
            self.built[key] = builder(self.root / name, seed=seed, **sizes)
        return self.built[key]

    def vlm(self, seed: int = 0, **sizes) -> Path:
        return self.build("vlm", seed, **sizes)

    def text(self, seed: int = 0, **sizes) -> Path:
        return self.build("text", seed, **sizes)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


def small_training_data(root: Path, n_train_queries: int, depth: int, eval_fraction: float) -> Path:
    """A 10-video synthetic benchmark under ``root/bench``, BM25 on its training queries and the
    training JSONL of both stages (no teacher labels, reference captions) in ``root/data``."""
    from rankvideo.data import first_stage, formats, training_data
    from rankvideo.demo.synthetic import SyntheticConfig, generate
    from rankvideo.video import VideoResolver

    bench = root / "bench"
    generate(SyntheticConfig.from_dict({"n_videos": 10, "n_test_queries": 2, "n_train_queries": n_train_queries}), bench)
    first_stage.run_bm25_stage(bench / "queries_train.tsv", bench / "transcripts.jsonl", 10, root / "run.json",
                               root / "run.trec", root / "v2q.json")
    formats.write_jsonl(root / "teacher.jsonl", [])
    training_data.build(bench / "queries_train.tsv", bench / "qrels.txt", root / "run.json", root / "teacher.jsonl",
                        bench / "transcripts.jsonl", bench / "captions_reference.jsonl", VideoResolver(bench / "videos"),
                        root / "data", depth=depth, eval_fraction=eval_fraction, seed=0, caption_source="reference")
    return root / "data"
