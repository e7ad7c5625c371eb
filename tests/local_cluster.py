"""A "cluster" on this machine for the scale-out tests: a private loopback-only network namespace, processes
started in their own process groups and stopped by id, and a two-node Ray cluster inside the namespace.

Why a network namespace: Ray 2.60's GCS and raylets listen on every interface (0.0.0.0, hard-coded in
Ray) whatever ``--node-ip-address`` says, and Ray turns 127.0.0.1 into the machine's routable address. In a
namespace whose only interface is ``lo`` every socket the tests open, Ray's and torchrun's included, is
reachable from that namespace's loopback only, the node address Ray picks is 127.0.0.1, and
``ip netns pids`` lists every process left in it, which is how the tests check that nothing outlives
them. Making a namespace takes root (``ip netns add``); CI runs as root, elsewhere the tests skip.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent


class NamespaceUnavailable(RuntimeError):
    """This machine cannot make a network namespace (not root, or no ``ip``)."""


class LoopbackNamespace:
    """``ip netns add rsft-<id>`` with ``lo`` up and no other interface."""

    def __init__(self) -> None:
        self.name = f"rsft-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        made = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True, timeout=30)
        if made.returncode != 0:
            raise NamespaceUnavailable(f"`ip netns add` failed: {made.stderr.strip()}")
        subprocess.run(self.wrap(["ip", "link", "set", "lo", "up"]), check=True, timeout=30)

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def interfaces(self) -> list[str]:
        out = subprocess.run(self.wrap(["ip", "-o", "link"]), capture_output=True, text=True, timeout=30).stdout
        return [line.split(":")[1].strip() for line in out.splitlines() if line.strip()]

    def pids(self) -> list[int]:
        """Every live process in the namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30).stdout
        return [int(p) for p in out.split() if is_alive(int(p))]

    def free_port(self) -> int:
        """A TCP port nothing in the namespace listens on, chosen by the kernel now."""
        probe = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
        out = subprocess.run(self.wrap([sys.executable, "-c", probe]), capture_output=True, text=True, timeout=60)
        return int(out.stdout.strip())

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30)


def is_alive(pid: int) -> bool:
    """Running (a zombie is dead: only its parent's wait is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def start(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Start ``argv`` in a process group of its own (its pgid is its pid), output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to the process, then SIGKILL to its whole group if anything in it is still there after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.poll() is None or group_members(proc.pid)):
        time.sleep(0.2)
    if group_members(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: exited ({proc.returncode}) before {text!r}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{log.name}: no {text!r} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


class RayCluster:
    """A Ray head node and one worker node, each a ``ray start --block`` process (own group) in ``namespace``."""

    STARTED = "Ray runtime started"

    def __init__(self, namespace: LoopbackNamespace, root: Path, env: dict[str, str], cpus_per_node: int = 1):
        self.namespace, self.root, self.env, self.cpus = namespace, root, env, cpus_per_node
        self.port = namespace.free_port()
        self.nodes: dict[str, subprocess.Popen] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def temp_dir(self, node: str) -> Path:
        return self.root / node

    def start(self, timeout: float = 120.0) -> None:
        common = [
            f"--num-cpus={self.cpus}",
            "--num-gpus=0",
            "--object-store-memory=80000000",  # 80 MB of /dev/shm per node (Ray's minimum is 75 MB)
            "--disable-usage-stats",
            "--block",
        ]
        head = [str(BIN / "ray"), "start", "--head", f"--port={self.port}", "--include-dashboard=false"]
        worker = [str(BIN / "ray"), "start", f"--address={self.address}"]
        for node, argv in (("head", head), ("worker", worker)):
            log = self.root / f"{node}.log"
            argv = [*argv, *common, f"--temp-dir={self.temp_dir(node)}"]
            self.nodes[node] = start(self.namespace.wrap(argv), log, self.env, self.root)
            wait_for_line(log, self.STARTED, self.nodes[node], timeout)
        self.wait_for_nodes(2, timeout)

    def alive_nodes(self) -> list[str]:
        argv = self.namespace.wrap([str(BIN / "ray"), "status", f"--address={self.address}"])
        out = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60).stdout
        active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
        return re.findall(r"node_[0-9a-f]+", active)

    def wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray cluster at {self.address} has not {count} live nodes after {timeout} s")
            time.sleep(1.0)

    def node_of_worker_pid(self, pid: int) -> str | None:
        """Which node ran the Ray worker process ``pid`` (from the worker log files each node keeps)."""
        for node in self.nodes:
            if any(self.temp_dir(node).glob(f"session_*/logs/python-core-worker-*_{pid}.log")):
                return node
        return None

    def stop(self) -> None:
        """Stop the worker node, then the head: each by its ``ray start`` process, then its process group."""
        for node in ("worker", "head"):
            if node in self.nodes:
                stop(self.nodes[node])

    def leftovers(self) -> list[int]:
        """Live processes of the cluster: in its process groups or anywhere in the namespace."""
        return sorted({p for proc in self.nodes.values() for p in group_members(proc.pid)} | set(self.namespace.pids()))
