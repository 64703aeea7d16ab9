"""A throw-away, single-node Slurm cluster for tests (not a test module).

``LocalSlurm`` installs Debian's ``slurm-wlm`` and ``munge`` if they are missing
(only as root, only with apt-get), writes a minimal ``slurm.conf``, starts
``munged``, ``slurmctld -D`` and ``slurmd -D`` itself (no systemd), waits until
the node is idle, and on exit stops exactly the daemons it started, by pid.

Why ``/etc/slurm/slurm.conf`` and not ``SLURM_CONF``: the job step of
snakemake-executor-plugin-slurm removes ``SLURM_CONF`` from the environment of
the ``srun`` it runs inside each job, so ``srun`` must find the configuration at
the compiled-in default path. An existing file there is backed up and restored.

Usage::

    ok, reason = LocalSlurm.available()
    if not ok:
        pytest.skip(reason)
    with LocalSlurm() as cluster:
        job_id = cluster.sbatch_wrap("hostname")
        state = cluster.wait_job(job_id)

No accounting database is configured (``accounting_storage/none``), so ``sacct``
cannot see finished jobs: query with ``squeue``/``scontrol``; ``MinJobAge=600``
keeps finished jobs visible to them for ten minutes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")
APT_PACKAGES = ("slurm-wlm", "munge")
# Client and daemon binaries the harness needs; all come with the two packages.
REQUIRED_BINARIES = (
    "munged", "munge", "unmunge",
    "slurmctld", "slurmd",
    "sinfo", "sbatch", "squeue", "scontrol", "scancel", "srun",
)
# Set to 1 to forbid apt-get installs (tests then skip where Slurm is absent).
NO_INSTALL_ENV = "LOCAL_SLURM_NO_INSTALL"
# Terminal job states as scontrol/squeue print them.
TERMINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
}


class LocalSlurmError(RuntimeError):
    """The local cluster could not be installed, started, used or stopped."""


# --------------------------------------------------------------------------- helpers
def _which(name: str) -> str | None:
    # Daemons live in /usr/sbin, which a non-login PATH may lack.
    extra = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def _missing_binaries() -> list[str]:
    return [b for b in REQUIRED_BINARIES if _which(b) is None]


def _run(cmd: list[str], timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a short command with a timeout; raise LocalSlurmError with its output on failure."""
    exe = _which(cmd[0]) or cmd[0]
    try:
        proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise LocalSlurmError(f"{' '.join(cmd)!r} timed out after {timeout:.0f} s") from e
    except FileNotFoundError as e:
        raise LocalSlurmError(f"{cmd[0]!r} not found") from e
    if check and proc.returncode != 0:
        raise LocalSlurmError(
            f"{' '.join(cmd)!r} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}".rstrip()
        )
    return proc


def pid_alive(pid: int) -> bool:
    """True if ``pid`` names a live (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _running_daemons(names: tuple[str, ...]) -> dict[int, str]:
    """pid -> name of running processes whose executable name is in ``names``."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            found[int(entry.name)] = comm
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise LocalSlurmError("MemTotal not found in /proc/meminfo")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no log at {path})"


# --------------------------------------------------------------------------- cluster
class LocalSlurm:
    """A single-node Slurm cluster on this machine, for the duration of a ``with`` block.

    Parameters
    ----------
    partition: name of the one (default) partition.
    cpus: CPUs of the node; default min(2, os.cpu_count()) (never more than the machine has,
        or slurmd would drain the node).
    real_memory_mb: RealMemory of the node; default 90 % of MemTotal.
    workdir: folder for state, spool, logs and pid files; default a fresh temp folder,
        removed on stop (kept if ``keep_workdir``).
    start_timeout / stop_timeout / install_timeout: seconds for each wait.
    """

    def __init__(
        self,
        partition: str = "debug",
        cpus: int | None = None,
        real_memory_mb: int | None = None,
        workdir: str | os.PathLike | None = None,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        install_timeout: float = 900.0,
        keep_workdir: bool = False,
    ):
        self.partition = partition
        self.cpus = cpus or max(1, min(2, os.cpu_count() or 1))
        self.real_memory_mb = real_memory_mb or max(256, int(_mem_total_mb() * 0.9))
        self.node_name = self._node_name()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.install_timeout = install_timeout
        self.keep_workdir = keep_workdir
        self._workdir_arg = Path(workdir) if workdir else None
        self.workdir: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}  # daemon name -> process we started
        self._conf_backup: Path | None = None  # copy of a pre-existing /etc/slurm/slurm.conf
        self._conf_written = False
        self._created_etc_slurm = False
        self._started = False

    # ----------------------------------------------------------------- availability
    @staticmethod
    def available() -> tuple[bool, str]:
        """(True, how) if a cluster can be started here, else (False, why not)."""
        if not sys.platform.startswith("linux"):
            return False, f"LocalSlurm needs Linux (this is {sys.platform})"
        if os.geteuid() != 0:
            return False, ("LocalSlurm needs root: it writes /etc/slurm/slurm.conf and runs "
                           "slurmd/slurmctld as root")
        others = _running_daemons(("slurmctld", "slurmd"))
        if others:
            desc = ", ".join(f"{n} (pid {p})" for p, n in sorted(others.items()))
            return False, (f"a Slurm daemon is already running on this machine: {desc}; "
                           "LocalSlurm will not take over its /etc/slurm/slurm.conf")
        missing = _missing_binaries()
        if not missing:
            return True, "slurm-wlm and munge are installed"
        if os.environ.get(NO_INSTALL_ENV, "") not in ("", "0"):
            return False, f"missing {', '.join(missing)} and {NO_INSTALL_ENV} forbids installing"
        if _which("apt-get") is None:
            return False, (f"missing {', '.join(missing)} and no apt-get to install "
                           f"{' '.join(APT_PACKAGES)}")
        return True, f"will install {' '.join(APT_PACKAGES)} with apt-get (missing {', '.join(missing)})"

    # ----------------------------------------------------------------- install
    def ensure_installed(self) -> None:
        missing = _missing_binaries()
        if not missing:
            return
        if os.geteuid() != 0 or _which("apt-get") is None:
            raise LocalSlurmError(f"missing {missing} and cannot apt-get install as non-root/without apt")
        if os.environ.get(NO_INSTALL_ENV, "") not in ("", "0"):
            raise LocalSlurmError(f"missing {missing}; {NO_INSTALL_ENV} forbids installing")
        log.info("installing %s with apt-get (missing %s)", " ".join(APT_PACKAGES), missing)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        # Keep package scripts from starting munge/slurm services: we start our own daemons.
        policy = Path("/usr/sbin/policy-rc.d")
        made_policy = False
        if not policy.exists():
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            made_policy = True
        t0 = time.monotonic()
        try:
            install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
            proc = _run(install, timeout=self.install_timeout, check=False, env=env)
            if proc.returncode != 0:
                log.info("apt-get install failed (%s); running apt-get update and retrying",
                         proc.returncode)
                _run(["apt-get", "update", "-q"], timeout=self.install_timeout, env=env)
                _run(install, timeout=self.install_timeout, env=env)
        finally:
            if made_policy:
                policy.unlink(missing_ok=True)
        log.info("apt-get install took %.0f s", time.monotonic() - t0)
        still = _missing_binaries()
        if still:
            raise LocalSlurmError(f"after apt-get install, still missing: {still}")

    # ----------------------------------------------------------------- config
    @staticmethod
    def _node_name() -> str:
        name = socket.gethostname().split(".")[0]
        return name or "localhost"

    def slurm_conf_text(self) -> str:
        assert self.workdir is not None
        w = self.workdir
        host = self.node_name
        lines = [
            "# Written by tests/slurm_cluster.py (LocalSlurm); restored on exit.",
            "ClusterName=localtest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",  # memory not consumable: jobs share the node's RAM
            "SchedulerType=sched/backfill",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            f"MailProg={_which('true') or '/bin/true'}",  # Debian's default mailer is absent
            "MinJobAge=600",  # finished jobs stay visible to squeue/scontrol (no sacct here)
            "InactiveLimit=0",
            "KillWait=5",
            "Waittime=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            f"StateSaveLocation={w / 'state'}",
            f"SlurmdSpoolDir={w / 'spool'}",
            f"SlurmctldPidFile={w / 'slurmctld.pid'}",
            f"SlurmdPidFile={w / 'slurmd.pid'}",
            f"SlurmctldLogFile={w / 'slurmctld.log'}",
            f"SlurmdLogFile={w / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={host} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={self.cpus} "
            f"RealMemory={self.real_memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def _install_conf(self) -> None:
        assert self.workdir is not None
        if not SLURM_CONF.parent.exists():
            SLURM_CONF.parent.mkdir(parents=True)
            self._created_etc_slurm = True
        if SLURM_CONF.exists() or SLURM_CONF.is_symlink():
            self._conf_backup = self.workdir / "slurm.conf.orig"
            # The backup lives in workdir, which is removed only after a successful restore.
            shutil.copy2(SLURM_CONF, self._conf_backup, follow_symlinks=False)
            log.info("backed up existing %s to %s", SLURM_CONF, self._conf_backup)
        tmp = SLURM_CONF.with_suffix(".conf.localslurm-tmp")
        tmp.write_text(self.slurm_conf_text())
        tmp.chmod(0o644)
        os.replace(tmp, SLURM_CONF)
        self._conf_written = True
        log.info("wrote %s (node %s, CPUs=%d, RealMemory=%d, partition %s)", SLURM_CONF,
                 self.node_name, self.cpus, self.real_memory_mb, self.partition)

    def _restore_conf(self) -> None:
        if not self._conf_written:
            return
        if self._conf_backup is not None and (self._conf_backup.exists() or self._conf_backup.is_symlink()):
            SLURM_CONF.unlink(missing_ok=True)
            shutil.copy2(self._conf_backup, SLURM_CONF, follow_symlinks=False)
            log.info("restored %s", SLURM_CONF)
        else:
            SLURM_CONF.unlink(missing_ok=True)
            log.info("removed %s (none existed before)", SLURM_CONF)
            if self._created_etc_slurm:
                with contextlib.suppress(OSError):
                    SLURM_CONF.parent.rmdir()
        self._conf_written = False

    # ----------------------------------------------------------------- munge
    @staticmethod
    def _munge_works() -> bool:
        try:
            cred = subprocess.run([_which("munge") or "munge", "-n"], capture_output=True,
                                  timeout=10)
            if cred.returncode != 0:
                return False
            check = subprocess.run([_which("unmunge") or "unmunge"], input=cred.stdout,
                                   capture_output=True, timeout=10)
            return check.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munge(self) -> None:
        if self._munge_works():
            log.info("a working munged is already running; using it (and leaving it running)")
            return
        try:
            mu = pwd.getpwnam("munge")
        except KeyError as e:
            raise LocalSlurmError("no 'munge' user; is the munge package installed?") from e
        for d, mode in ((MUNGE_KEY.parent, 0o700), (MUNGE_SOCKET_DIR, 0o755),
                        (Path("/var/lib/munge"), 0o711), (Path("/var/log/munge"), 0o700)):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, mu.pw_uid, mu.pw_gid)
            d.chmod(mode)
        if not MUNGE_KEY.exists():
            log.info("creating munge key %s", MUNGE_KEY)
            MUNGE_KEY.write_bytes(os.urandom(1024))
        os.chown(MUNGE_KEY, mu.pw_uid, mu.pw_gid)
        MUNGE_KEY.chmod(0o400)
        # munged insists that the key be owned by the user it runs as: run it as 'munge'.
        self._spawn("munged", [_which("munged") or "munged", "--foreground"],
                    user=mu.pw_uid, group=mu.pw_gid, extra_groups=[])
        self._wait_for(self._munge_works, "munged to answer 'munge -n | unmunge'", 20,
                       watch=("munged",))

    # ----------------------------------------------------------------- processes
    def _spawn(self, name: str, cmd: list[str], **kw) -> None:
        assert self.workdir is not None
        out = open(self.workdir / f"{name}.stdout", "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True, **kw)
        finally:
            out.close()
        self.procs[name] = proc
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(cmd))

    @property
    def pids(self) -> dict[str, int]:
        """Daemon name -> pid for every daemon this object started."""
        return {name: p.pid for name, p in self.procs.items()}

    def _daemon_output(self, name: str) -> str:
        assert self.workdir is not None
        parts = [_tail(self.workdir / f"{name}.stdout")]
        if name in ("slurmctld", "slurmd"):
            parts.append(_tail(self.workdir / f"{name}.log"))
        if name == "munged":
            parts.append(_tail(Path("/var/log/munge/munged.log")))
        return "\n".join(parts)

    def _wait_for(self, predicate, what: str, timeout: float, watch: tuple[str, ...] = (),
                  interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name in watch:
                p = self.procs.get(name)
                if p is not None and p.poll() is not None:
                    raise LocalSlurmError(
                        f"{name} (pid {p.pid}) exited with {p.returncode} while waiting for {what}:\n"
                        f"{self._daemon_output(name)}")
            if predicate():
                return
            if time.monotonic() > deadline:
                details = "\n".join(f"--- {n}:\n{self._daemon_output(n)}" for n in watch)
                raise LocalSlurmError(f"timed out after {timeout:.0f} s waiting for {what}\n{details}")
            time.sleep(interval)

    def node_state(self) -> str:
        proc = _run(["sinfo", "-h", "-N", "-n", self.node_name, "-o", "%T"], timeout=15, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    # ----------------------------------------------------------------- start / stop
    def start(self) -> "LocalSlurm":
        if self._started:
            raise LocalSlurmError("LocalSlurm already started")
        ok, reason = self.available()
        if not ok:
            raise LocalSlurmError(reason)
        self.ensure_installed()
        self._started = True
        atexit.register(self.stop)  # safety net if the caller never reaches stop()
        try:
            self._start()
        except BaseException as e:
            self.keep_workdir = True  # keep daemon logs for the post-mortem
            log.error("local Slurm failed to start (%s); logs kept in %s", e, self.workdir)
            self.stop()
            raise
        return self

    def _start(self) -> None:
        t0 = time.monotonic()
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = self._workdir_arg
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="localslurm-"))
        for sub in ("state", "spool"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        self._install_conf()
        self._start_munge()

        self._spawn("slurmctld", [_which("slurmctld") or "slurmctld", "-D", "-c", "-i",
                                  "-f", str(SLURM_CONF)])
        def ctld_up() -> bool:
            ping = _run(["scontrol", "ping"], timeout=15, check=False)
            return ping.returncode == 0 and "UP" in ping.stdout

        self._wait_for(ctld_up, "slurmctld to answer 'scontrol ping'", self.start_timeout,
                       watch=("slurmctld",))
        self._spawn("slurmd", [_which("slurmd") or "slurmd", "-D", "-N", self.node_name,
                               "-f", str(SLURM_CONF)])

        def idle() -> bool:
            state = self.node_state()
            # "*" = not responding yet (slurmd still registering); inval = config > hardware.
            if state.startswith(("drain", "down", "fail", "inval")) and "*" not in state:
                reason = _run(["scontrol", "show", "node", self.node_name], timeout=15,
                              check=False).stdout
                raise LocalSlurmError(f"node {self.node_name} is {state}:\n{reason}")
            return state == "idle"

        self._wait_for(idle, f"node {self.node_name} to be idle in sinfo", self.start_timeout,
                       watch=("slurmctld", "slurmd", "munged"))
        log.info("local Slurm up in %.1f s: node %s, partition %s, pids %s",
                 time.monotonic() - t0, self.node_name, self.partition, self.pids)

    def _cancel_all_jobs(self) -> None:
        """Cancel every job of this (private) cluster so no slurmstepd outlives it."""
        if "slurmctld" not in self.procs or self.procs["slurmctld"].poll() is not None:
            return
        user = pwd.getpwuid(os.geteuid()).pw_name
        try:
            _run(["scancel", "-u", user], timeout=15, check=False)

            def no_active_jobs() -> bool:
                out = _run(["squeue", "-h", "-t", "PD,R,CG,S,CF", "-o", "%i"], timeout=15,
                           check=False)
                return out.returncode != 0 or not out.stdout.strip()

            self._wait_for(no_active_jobs, "jobs to leave the queue", self.stop_timeout)
        except LocalSlurmError as e:
            log.warning("could not cancel all jobs before stopping: %s", e)

    def stop(self) -> None:
        """Stop the daemons this object started (by pid) and restore /etc/slurm/slurm.conf."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        errors: list[str] = []
        try:
            self._cancel_all_jobs()
        except Exception as e:  # noqa: BLE001 - stopping must go on
            errors.append(f"cancelling jobs: {e}")
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            log.info("stopping %s (pid %d)", name, proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, proc.pid,
                            self.stop_timeout)
                proc.kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    errors.append(f"{name} (pid {proc.pid}) survived SIGKILL")
        try:
            self._restore_conf()
        except Exception as e:  # noqa: BLE001
            errors.append(f"restoring {SLURM_CONF}: {e}")
        if self.workdir is not None and self._workdir_arg is None and not self.keep_workdir and not errors:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise LocalSlurmError("; ".join(errors))

    def alive_pids(self) -> dict[str, int]:
        """Daemons started by this object whose pid is still alive."""
        return {name: p.pid for name, p in self.procs.items() if pid_alive(p.pid)}

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- job helpers
    def sbatch_wrap(self, command: str, *args: str, cwd: str | os.PathLike | None = None) -> str:
        """Submit ``sbatch --wrap command`` to this cluster's partition; return the job id."""
        proc = _run(["sbatch", "--parsable", "-p", self.partition, *args, "--wrap", command],
                    timeout=30, cwd=cwd)
        job_id = proc.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise LocalSlurmError(f"unexpected sbatch output: {proc.stdout!r}")
        log.info("submitted job %s: %s", job_id, command)
        return job_id

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (empty if the controller forgot the job)."""
        proc = _run(["scontrol", "show", "job", "-o", str(job_id)], timeout=15, check=False)
        if proc.returncode != 0:
            return {}
        info: dict[str, str] = {}
        for tok in proc.stdout.split():
            key, sep, val = tok.partition("=")
            if sep:
                info[key] = val
        return info

    def wait_job(self, job_id: str, timeout: float = 60.0) -> dict[str, str]:
        """Wait until the job reaches a terminal state; return its scontrol fields."""
        result: dict[str, str] = {}

        def done() -> bool:
            nonlocal result
            queued = _run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], timeout=15, check=False)
            state = queued.stdout.strip()
            if queued.returncode == 0 and state and state not in TERMINAL_STATES:
                return False
            result = self.job_info(job_id)
            return result.get("JobState", "") in TERMINAL_STATES

        self._wait_for(done, f"job {job_id} to finish", timeout, watch=("slurmctld", "slurmd"))
        return result

    def squeue_jobs(self) -> Iterator[tuple[str, str, str]]:
        """(job id, name, state) of every job the controller still knows."""
        proc = _run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T"], timeout=15)
        for line in proc.stdout.splitlines():
            jid, name, state = line.split("|", 2)
            yield jid, name, state


def skip_without_local_slurm() -> None:
    """Skip the calling test, with the reason, where a local Slurm or the Slurm executor plugin is missing."""
    import pytest

    ok, reason = LocalSlurm.available()
    if not ok:
        pytest.skip(f"no local Slurm: {reason}")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
