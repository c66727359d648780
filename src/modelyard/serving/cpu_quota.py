"""How many cores this process may really use: its CPU affinity, capped by its cgroup CPU quota.

A Kubernetes CPU limit (``resources.limits.cpu``), ``docker run --cpus`` or Cloud Run's vCPU
setting is a *quota* of CPU time per period, not a set of cores: the CPU affinity still lists
every core of the host. A server that started one ONNX Runtime thread per host core under a
2-core limit on a 32-core node would have its threads throttled together every period, a long
stall in the middle of requests. So the cores are the smaller of the affinity and the quota
rounded up (``ceil(quota / period)``: a 1.5-CPU limit still lets two threads run half the time).

The quota is read from the cgroup filesystem: cgroup v2's ``cpu.max`` (``"max 100000"``, or
``"QUOTA PERIOD"`` in microseconds), else cgroup v1's ``cpu.cfs_quota_us`` (-1 = none) and
``cpu.cfs_period_us``, in this process's own cgroup (``/proc/self/cgroup``) and every cgroup
above it up to the root (a parent's limit binds too). Inside a container the cgroup namespace
usually makes the container's cgroup the root itself. A file that is absent, unreadable or not
in the kernel's format means no limit: sizing never fails because of it.

``root`` and ``membership`` are parameters so that the tests read files they wrote.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: This process's cgroup in each hierarchy ("ID:CONTROLLERS:PATH" lines).
MEMBERSHIP = Path("/proc/self/cgroup")
#: Directories under ``root`` where cgroup v1 mounts the CPU controller.
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True)
class CpuQuota:
    """A CPU-time limit found in a cgroup: ``cores`` = ceil(quota / period), at least 1."""

    cores: int
    file: Path
    text: str  # what the file said, e.g. "150000 100000"

    def describe(self) -> str:
        return f"cgroup CPU quota {self.text} in {self.file}"


@dataclass(frozen=True)
class CpuBudget:
    """The cores this process may use, and where that number came from."""

    cores: int
    affinity: int
    quota: CpuQuota | None

    @property
    def limited_by_quota(self) -> bool:
        return self.quota is not None and self.quota.cores < self.affinity

    def describe(self) -> str:
        """E.g. ``2 cores (cgroup CPU quota 200000 100000 in /sys/fs/cgroup/cpu.max; CPU
        affinity 16)`` or ``2 cores (CPU affinity; no cgroup CPU quota)``."""
        if self.quota is None:
            return f"{self.cores} cores (CPU affinity; no cgroup CPU quota)"
        if self.limited_by_quota:
            return f"{self.cores} cores ({self.quota.describe()}; CPU affinity {self.affinity})"
        return (
            f"{self.cores} cores (CPU affinity; {self.quota.describe()} allows {self.quota.cores})"
        )


def affinity_cores() -> int:
    """Cores this process may be scheduled on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_budget(
    root: Path = CGROUP_ROOT, membership: Path = MEMBERSHIP, affinity: int | None = None
) -> CpuBudget:
    """The smaller of the CPU affinity (``affinity``, default this process's) and the cgroup
    CPU quota under ``root``."""
    cores = affinity_cores() if affinity is None else max(1, affinity)
    quota = cgroup_quota(root, membership)
    return CpuBudget(min(cores, quota.cores) if quota else cores, cores, quota)


def cgroup_quota(root: Path = CGROUP_ROOT, membership: Path = MEMBERSHIP) -> CpuQuota | None:
    """The tightest CPU quota on this process's cgroups under ``root``, None when unlimited
    (or nothing readable is there)."""
    paths = _membership(membership)
    found = [_v2_quota(d) for d in _lineage(root, paths.get("", "/"))]
    v1_path = next((p for names, p in paths.items() if "cpu" in names.split(",")), "/")
    for controller in V1_CPU_DIRS:
        found += [_v1_quota(d) for d in _lineage(root / controller, v1_path)]
    limits = [quota for quota in found if quota is not None]
    return min(limits, key=lambda quota: quota.cores, default=None)


def parse_cpu_max(text: str) -> tuple[int, int] | None:
    """cgroup v2 ``cpu.max``: ``(quota, period)`` in microseconds, None for ``max`` or a text
    not in the kernel's format."""
    fields = text.split()
    if not fields or fields[0] == "max" or len(fields) > 2:
        return None
    period = fields[1] if len(fields) == 2 else "100000"  # the kernel's default period
    return _positive_pair(fields[0], period)


def quota_cores(quota: int, period: int) -> int:
    """Whole cores a quota lets run at once: rounded up, at least 1."""
    return max(1, math.ceil(quota / period))


def _v2_quota(directory: Path) -> CpuQuota | None:
    file = directory / "cpu.max"
    text = _read(file)
    pair = None if text is None else parse_cpu_max(text)
    return None if pair is None else CpuQuota(quota_cores(*pair), file, text or "")


def _v1_quota(directory: Path) -> CpuQuota | None:
    file = directory / "cpu.cfs_quota_us"
    quota, period = _read(file), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    pair = _positive_pair(quota, period)  # -1: no quota
    return None if pair is None else CpuQuota(quota_cores(*pair), file, f"{quota} {period}")


def _positive_pair(first: str, second: str) -> tuple[int, int] | None:
    try:
        pair = int(first), int(second)
    except ValueError:
        return None
    return pair if min(pair) > 0 else None


def _read(file: Path) -> str | None:
    try:
        return file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _membership(file: Path) -> dict[str, str]:
    """``/proc/self/cgroup`` as controllers -> path (``""`` is cgroup v2's unified line)."""
    text = _read(file) or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    return found


def _lineage(root: Path, path: str) -> list[Path]:
    """``root/path`` and each directory above it, up to ``root`` itself (always included:
    inside a container the path named may belong to the host's view of the hierarchy)."""
    relative = Path(path.strip().lstrip("/"))
    directories = [root / relative, *(root / parent for parent in relative.parents)]
    return list(dict.fromkeys(directories)) if str(relative) != "." else [root]
