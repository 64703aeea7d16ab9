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
