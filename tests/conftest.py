import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
