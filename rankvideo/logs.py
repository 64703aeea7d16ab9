"""Logging for command-line entry points and pipeline scripts."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: int = logging.INFO) -> None:
    """Log to stderr (command-line use)."""
    logging.basicConfig(level=level, format=FORMAT, force=True)


@contextlib.contextmanager
def to_file(path: str | Path, level: int = logging.INFO):
    """Send logging, warnings, stderr (progress bars) and stdout (e.g. the Trainer's loss lines) of a
    pipeline step to its log file.

    An exception is logged with its traceback before it propagates, so the log file says why
    the step failed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", buffering=1) as handle:
        logging.basicConfig(level=level, format=FORMAT, stream=handle, force=True)
        logging.captureWarnings(True)
        with contextlib.redirect_stderr(handle), contextlib.redirect_stdout(handle):
            try:
                yield
            except BaseException:
                logging.getLogger("rankvideo").exception("step failed")
                raise
            finally:
                logging.shutdown()
        sys.stderr.flush()


# ----------------------------------------------------------------------------- child processes


def package_env(**extra: str) -> dict:
    """This environment, with this package importable by a child process."""
    package_root = str(Path(__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
                **extra)


def run_streamed(cmd: list[str], env: dict) -> int:
    """Run ``cmd``, its output (stdout and stderr) streamed into this process's stderr (the rule's
    log); returns its exit status."""
    sys.stderr.flush()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            sys.stderr.write(line)
    return proc.returncode
