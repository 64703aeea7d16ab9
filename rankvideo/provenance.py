"""What produced an output: the package's code version, the git commit, file hashes and a model's
fingerprint. Scoring records them in ``run_info.json`` (scores from other code or another model are
not resumed) and training in ``rankvideo_training.json`` and its resume check."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).parent


def code_version() -> str:
    """A hash of the package's source files."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_commit() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=PACKAGE).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model: str) -> dict:
    """What identifies a model cheaply: a hub id as given; a local folder by its resolved path,
    config.json's hash and the names, sizes and modification times of its files (a model retrained
    into the same folder differs). Subfolders (checkpoints) are not part of it."""
    path = Path(model)
    if not path.is_dir():
        return {"model": model}
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir()) if p.is_file()]
    config = path / "config.json"
    return {"model": str(path.resolve()), "config_sha256": file_sha256(config)[:16] if config.is_file() else None,
            "files": hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]}
