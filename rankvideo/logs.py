"""Logging for command-line entry points and pipeline scripts.

One line per event: libraries' per-item chatter (qwen_vl_utils logs every decoded video) is
raised to WARNING, and where stderr is not a terminal (a rule's log file, a pipe) progress bars
give way to a periodic one-line progress log (:func:`progress`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: libraries that log a line per item at INFO/DEBUG (qwen_vl_utils: one per decoded video;
#: bm25s: index building at DEBUG): only their warnings are kept
QUIET_LOGGERS = ("qwen_vl_utils", "bm25s")

log = logging.getLogger(__name__)


def interactive(stream=None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is a terminal, where a progress bar
    redraws in place; a file or pipe would keep every frame."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def quiet_libraries() -> None:
    """Only warnings from :data:`QUIET_LOGGERS`; without a terminal, no Hugging Face progress bars
    ("Loading weights", "Writing model shards") in this process."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if interactive():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub is first imported
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def exit_now(code: int):
    """End the process with ``code`` once stdout, stderr and the log handlers are flushed, skipping the
    interpreter's teardown: after torch, CUDA and torch.compile that teardown (freeing every module's
    objects, their exit handlers, which only log) took 0.8-1.2 s on a 2-CPU machine and about 3 s of a
    rerank job's wall time on an H200 node. For a command's own process once all its work is written;
    never from library code, nor with worker processes that need an orderly shutdown (vLLM's engine)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken: nothing more can be said on it
            pass
    os._exit(code)


def setup(level: int = logging.INFO) -> None:
    """Log to stderr (command-line use)."""
    logging.basicConfig(level=level, format=FORMAT, force=True)
    quiet_libraries()


@contextlib.contextmanager
def to_file(path: str | Path, level: int = logging.INFO):
    """Send logging, warnings, stderr and stdout (e.g. the Trainer's loss lines) of a pipeline step
    to its log file, with :func:`quiet_libraries` (a file is no terminal: no progress bars).

    An exception is logged with its traceback before it propagates, so the log file says why
    the step failed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved_env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    with open(path, "w", encoding="utf-8", buffering=1) as handle:
        logging.basicConfig(level=level, format=FORMAT, stream=handle, force=True)
        logging.captureWarnings(True)
        with contextlib.redirect_stderr(handle), contextlib.redirect_stdout(handle):
            quiet_libraries()
            try:
                yield
            except BaseException:
                logging.getLogger("rankvideo").exception("step failed")
                raise
            finally:
                logging.shutdown()
                if saved_env is None:
                    os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
                else:
                    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = saved_env
        sys.stderr.flush()


class LogProgress:
    """A long loop's progress as log lines, for a stderr that is no terminal: one line when each
    tenth of ``total`` is reached, one after ``every_s`` seconds without a line, and one at
    :meth:`close` (unless the last line already said the same). tqdm's ``update``/``set_postfix``/
    ``close`` and iteration, so a loop written for a bar takes either.

    A line reads ``rerank base: 40/74 video (54%), 18.3 video/s, failed=0``.
    """

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, every_s: float = 60.0, logger: logging.Logger | None = None, enabled: bool = True):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.every_s, self.enabled = every_s, enabled
        self.logger = logger or log
        self.postfix: dict[str, object] = {}
        self._start = self._last_time = time.monotonic()
        self._last_n: int | None = None
        self._tenth = self._tenths(initial)
        self._closed = False

    def _tenths(self, n: int) -> int:
        return math.floor(10 * n / self.total) if self.total else 0

    def line(self) -> str:
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        parts = [f"{self.desc}: {done} {self.unit}" if self.desc else f"{done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        elapsed = time.monotonic() - self._start
        if self.n > self.initial and elapsed > 0:
            parts.append(f"{(self.n - self.initial) / elapsed:.3g} {self.unit}/s")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return ", ".join(parts)

    def _emit(self) -> None:
        self.logger.info("%s", self.line())
        self._last_n, self._last_time = self.n, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        tenth = self._tenths(self.n)
        if tenth > self._tenth or time.monotonic() - self._last_time >= self.every_s:
            self._tenth = max(tenth, self._tenth)
            self._emit()

    def set_postfix(self, **values) -> None:
        self.postfix = dict(values)

    def close(self) -> None:
        if self.enabled and not self._closed and self._last_n != self.n:
            self._emit()
        self._closed = True

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, enabled: bool = True, every_s: float = 60.0, logger: logging.Logger | None = None):
    """The progress display of every long loop of the package: a tqdm bar on a terminal, a
    :class:`LogProgress` (periodic log lines, no ``\\r`` frames) anywhere else; nothing when not
    ``enabled`` (``--no-progress``). Use as tqdm: iterate over it, or ``update``/``close`` it."""
    if enabled and interactive():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, every_s=every_s, logger=logger,
                       enabled=enabled)


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
