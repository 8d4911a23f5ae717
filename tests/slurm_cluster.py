"""A one-node SLURM cluster on 127.0.0.1 for the tests: Debian's munged, MariaDB, slurmdbd, slurmctld and
slurmd, every file of theirs (configs, state, sockets, logs, the database) in one temporary directory.

Accounting is real: snakemake-executor-plugin-slurm reads job states and failure reasons with ``sacct``,
which answers only from slurmdbd's database (with ``accounting_storage/none`` it reports "Slurm
accounting storage is disabled"). The node has two partitions (``cpu``, the default, and ``gpu``) and
three GPUs as a typed ``gres`` (``gpu:tgpu:3``) whose device files are made here, so SLURM
schedules, counts and hands out the GPU (setting ``CUDA_VISIBLE_DEVICES`` in the job) although there is
no GPU. The daemons run as root (munged as its own user, as Debian runs it); jobs run as the submitting
user. Used by tests/test_slurm.py; ``python tests/slurm_cluster.py`` starts one by hand and prints how
to use it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacctmgr", "sbatch", "srun")
CLUSTER = "tessera-test"
ACCOUNT = "tessera"
GPU_MODEL = "tgpu"
GPUS = 3


class ClusterUnavailable(RuntimeError):
    """SLURM (or what it needs) is not installed, or its daemons did not come up."""


def missing_programs() -> list[str]:
    """The programs of the cluster that are not installed (Debian: munge, mariadb-server, slurmdbd,
    slurmctld, slurmd, slurm-client)."""
    paths = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    return [p for p in DAEMONS if shutil.which(p, path=paths) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    """A running cluster; ``env`` is what a client (sbatch, squeue, sacct, snakemake) needs."""

    root: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def queue(self) -> list[str]:
        """Job IDs SLURM still has pending or running (``squeue``)."""
        return self.run("squeue", "--noheader", "--format=%i").stdout.split()

    def accounting(self, *fields: str) -> list[dict[str, str]]:
        """Every job's ``fields`` as sacct reports them (allocations only, no steps)."""
        out = self.run("sacct", "--allusers", "--allocations", "--noheader", "--parsable2",
                       "--starttime", "now-1days", f"--format={','.join(fields)}").stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]

    def wait_for(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise ClusterUnavailable(f"{what} did not come up ({'exited: ' + ', '.join(dead) if dead else 'timeout'})"
                                         f"; logs in {self.root / 'log'}:\n{self.logs_tail()}")
            time.sleep(0.2)

    def logs_tail(self, n: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}"
                         for p in sorted((self.root / "log").iterdir()))

    def start(self, name: str, cmd: list[str], **kw) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, **kw)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons in reverse order (SIGTERM, then SIGKILL), then kill any
        process of a job that outlived them."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user", pwd.getpwuid(os.getuid()).pw_name], env=self.env,
                           capture_output=True, timeout=30)
            with contextlib.suppress(ClusterUnavailable):
                self.wait_for("an empty queue", lambda: not self.queue(), timeout=20)
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)
        # slurmstepd and the jobs' processes live in their own sessions: none may outlive the cluster
        for pid in _processes_of(self.conf):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _processes_of(conf: Path) -> list[int]:
    """PIDs of processes (other than this one) whose environment names ``conf`` as SLURM_CONF: the
    daemons' children (slurmstepd) and the jobs (sbatch exports the submitter's environment)."""
    marker = f"SLURM_CONF={conf}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
    return pids


def _slurm_conf(root: Path, host: str, ports: dict[str, int], cpus: int, mem_mb: int) -> str:
    return f"""\
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/spool/ctld
SlurmdSpoolDir={root}/spool/d
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
AccountingStoragePass={root}/munge/munge.socket
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=sched_interval=1,bf_interval=1
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:{GPU_MODEL}:{GPUS} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP
"""


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("no MemTotal in /proc/meminfo")


@contextlib.contextmanager
def slurm_cluster(base_env: dict[str, str] | None = None) -> Iterator[SlurmCluster]:
    """Start the cluster; stop it (and everything it ran) when the block ends, however it ends."""
    if os.getuid() != 0:
        raise ClusterUnavailable("the test cluster's daemons run as root; this is not root")
    if missing := missing_programs():
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (Debian: apt-get install munge mariadb-server "
                                 "slurmdbd slurmctld slurmd slurm-client; `make test` does this as root)")
    root = Path(tempfile.mkdtemp(prefix="tessera-slurm-"))
    root.chmod(0o755)  # munged runs as the munge user and must reach its directory
    for sub in ("etc", "spool/ctld", "spool/d", "run", "log", "db", "dev", "bin"):
        (root / sub).mkdir(parents=True)
    host = socket.gethostname().split(".")[0]
    ports = {name: _free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
    env = dict(base_env if base_env is not None else os.environ)
    # snakemake-executor-plugin-slurm-jobstep (0.6.1) starts each job's step with `srun` in an environment
    # without SLURM_* variables, SLURM_CONF included: a real cluster's srun finds /etc/slurm/slurm.conf,
    # this cluster's srun is a wrapper (first on the jobs' PATH) that names this cluster's file.
    srun = root / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={root}/etc/slurm.conf exec {shutil.which("srun")} "$@"\n')
    srun.chmod(0o755)
    env.update(SLURM_CONF=str(root / "etc" / "slurm.conf"),
               PATH=os.pathsep.join([str(root / "bin"), env.get("PATH", ""), "/usr/sbin", "/sbin"]))
    for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_", "SACCT_"))]:
        if var != "SLURM_CONF":
            del env[var]
    cluster = SlurmCluster(root, env)
    try:
        _start_munge(cluster)
        _start_database(cluster, ports["mariadb"])
        # at least 6 CPUs, more than a 2-core machine has (slurmd accepts it: config_overrides), and memory
        # not counted (CR_Core): the tests' runs share the node at once, and a job that waits on a status
        # check or holds a GPU never keeps another from starting; the OS shares the cores
        cpus = max(6, os.cpu_count() or 1)
        (root / "etc" / "slurm.conf").write_text(_slurm_conf(root, host, ports, cpus, _mem_mb()))
        # the GPUs' device files: character devices (slurmd accepts no other) that are /dev/null
        for i in range(GPUS):
            os.mknod(root / "dev" / f"tgpu{i}", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        (root / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={host} Name=gpu Type={GPU_MODEL} File={root}/dev/tgpu[0-{GPUS - 1}]\n")
        dbd_conf = root / "etc" / "slurmdbd.conf"
        dbd_conf.write_text(
            f"AuthType=auth/munge\nAuthInfo=socket={root}/munge/munge.socket\nDbdHost=localhost\nDbdAddr=127.0.0.1\n"
            f"DbdPort={ports['slurmdbd']}\nSlurmUser=root\nLogFile={root}/log/slurmdbd.log\n"
            f"PidFile={root}/run/slurmdbd.pid\nStorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={ports['mariadb']}\nStorageUser=root\nStorageLoc=slurm_acct_db\n")
        dbd_conf.chmod(0o600)
        cluster.start("slurmdbd", ["slurmdbd", "-D"])  # reads slurmdbd.conf beside $SLURM_CONF
        cluster.wait_for("slurmdbd", lambda: cluster.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0)
        cluster.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        cluster.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={CLUSTER}", "Description=tests",
                    "Organization=tessera")
        user = pwd.getpwuid(os.getuid()).pw_name
        cluster.run("sacctmgr", "-i", "add", "user", user, f"Account={ACCOUNT}", f"Cluster={CLUSTER}")
        cluster.start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(cluster.conf)])
        cluster.wait_for("slurmctld", lambda: cluster.run("sinfo", check=False).returncode == 0)
        cluster.start("slurmd", ["slurmd", "-D", "-N", host, "-f", str(cluster.conf)])
        cluster.wait_for("the node", lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _start_munge(cluster: SlurmCluster) -> None:
    """munged as the munge user, with its own key, socket and files under ``root/munge``."""
    d = cluster.root / "munge"
    d.mkdir()
    d.chmod(0o755)  # clients must reach the socket
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge = pwd.getpwnam("munge")
    for path in (d, key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    cluster.start("munged", ["munged", "--foreground", f"--key-file={key}", f"--socket={d}/munge.socket",
                             f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                             f"--seed-file={d}/munged.seed", "--num-threads=2"], user="munge", group="munge")
    cluster.wait_for("munged", lambda: (d / "munge.socket").exists())


def _start_database(cluster: SlurmCluster, port: int) -> None:
    """MariaDB on 127.0.0.1:``port`` for slurmdbd, small and without durability (a test's database)."""
    datadir = cluster.root / "db"
    sock = cluster.root / "run" / "mariadb.sock"
    options = [f"--datadir={datadir}", "--user=root", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
               "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=0", "--performance-schema=OFF"]
    subprocess.run(["mariadb-install-db", "--no-defaults", *options, "--auth-root-authentication-method=normal",
                    "--skip-test-db"], env=cluster.env, capture_output=True, check=True, timeout=300)
    cluster.start("mariadbd", ["mariadbd", "--no-defaults", *options, f"--socket={sock}", f"--port={port}",
                               "--bind-address=127.0.0.1", f"--pid-file={cluster.root}/run/mariadb.pid",
                               f"--log-error={cluster.root}/log/mariadb.log", "--skip-grant-tables"])
    cluster.wait_for("MariaDB", sock.exists)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as cleanly as Ctrl-C
    with slurm_cluster() as c:
        print(f"cluster up in {c.root}; in another shell:  export SLURM_CONF={c.conf}; sinfo; sbatch --wrap 'hostname'")
        print("Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
