"""What the benchmark reads from /proc: CPU seconds and RSS of a process tree, listeners, machine.

Linux only. Everything here is a plain read of /proc; nothing is changed.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the ``(comm)`` part (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _all_parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(roots: list[int]) -> list[int]:
    """The given pids and all their living descendants (gunicorn master + workers, …)."""
    parents = _all_parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    seen: list[int] = []
    stack = [pid for pid in roots if pid in parents]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(children.get(pid, []))
    return sorted(seen)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds (children that exited are not counted)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of the given processes in seconds: the process's own code against the
    kernel's work on its behalf (a loopback ``send()`` runs the receiver's TCP path too)."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11])
            system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds_with_reaped(pids: list[int]) -> float:
    """utime + stime of the given processes plus what their exited, reaped children used.

    A process tree's CPU across a worker's exit: once the gunicorn master has reaped a drained
    worker, that worker's CPU shows in the master's cutime + cstime. Compare two readings.
    """
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``Z`` for a zombie), None when it no longer exists."""
    fields = _stat_fields(pid)
    return fields[0] if fields is not None else None


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of the given processes, summed."""
    total = 0
    for pid in pids:
        try:
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        total += pages * PAGE_SIZE
    return total


def listener_pids(port: int) -> list[int]:
    """Pids of the processes holding a listening TCP socket on ``port`` (any local address)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return []
    pids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in inodes:
                        pids.append(int(entry.name))
                        break
                except OSError:
                    continue
    return sorted(pids)


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


CoreTimes = dict[str, tuple[int, int]]


def core_times() -> CoreTimes:
    """Per-core (total, idle) jiffies from /proc/stat; softirq and irq time count as busy."""
    out: CoreTimes = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            nums = [int(v) for v in vals]
            out[name] = (sum(nums[:8]), nums[3] + nums[4])
    return out


def core_busy(before: CoreTimes, after: CoreTimes) -> list[float]:
    """Busy fraction of each core between two :func:`core_times` snapshots."""
    result: list[float] = []
    for name in sorted(after, key=lambda n: int(n[3:])):
        total = after[name][0] - before.get(name, (0, 0))[0]
        idle = after[name][1] - before.get(name, (0, 0))[1]
        result.append(0.0 if total <= 0 else 1.0 - idle / total)
    return result


def machine_busy_fraction(seconds: float = 1.0) -> list[float]:
    """Per-core busy fraction over ``seconds``, to show background load before a run."""
    before = core_times()
    time.sleep(seconds)
    return core_busy(before, core_times())


@dataclass(frozen=True)
class Machine:
    cores: int
    cpu_model: str
    kernel: str
    python: str
    memory_gib: float

    def describe(self) -> str:
        return (
            f"{self.cores} cores ({self.cpu_model}), {self.memory_gib:.0f} GiB RAM, "
            f"Linux {self.kernel}, Python {self.python}"
        )


def machine() -> Machine:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    try:
        # --all: this process may be pinned to one core already.
        nproc = subprocess.run(["nproc", "--all"], capture_output=True, text=True)
        cores = int(nproc.stdout.strip())
    except (OSError, ValueError):
        cores = os.cpu_count() or 1
    return Machine(
        cores=cores,
        cpu_model=model,
        kernel=platform.release(),
        python=platform.python_version(),
        memory_gib=mem_kib / 1024 / 1024,
    )


def raise_nofile(target: int = 65536) -> int:
    """Raise this process's open-file limit (the hard one too when allowed); return the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(target, hard)), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
