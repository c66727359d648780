"""Energy used by a block of work, from hardware counters only: RAPL for CPUs, NVML for GPUs.

Nothing is estimated: when no counter can be read, the report says which ones were tried and
why they were unavailable, and the energy stays ``None``.
"""

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

POWERCAP = Path("/sys/class/powercap")
#: Top-level RAPL zones are packages (``intel-rapl:0``); ``intel-rapl:0:1`` are sub-zones of it.
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass
class EnergyReport:
    duration_s: float
    cpu_joules: float | None
    gpu_joules: float | None
    sources: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.cpu_joules is not None or self.gpu_joules is not None

    @property
    def total_joules(self) -> float | None:
        parts = [j for j in (self.cpu_joules, self.gpu_joules) if j is not None]
        return sum(parts) if parts else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "measured": self.measured,
            "total_joules": self.total_joules,
            "cpu_joules": self.cpu_joules,
            "gpu_joules": self.gpu_joules,
            "duration_s": round(self.duration_s, 3),
            "sources": self.sources,
            "unavailable": self.unavailable,
        }


class RaplCounters:
    """Cumulative energy counters of every CPU package, with wrap-around handled."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self.zones: list[Path] = []
        self.problem: str | None = None
        if not root.is_dir():
            self.problem = f"CPU: no RAPL powercap interface at {root}"
            return
        zones = sorted(p for p in root.iterdir() if _PACKAGE_ZONE.match(p.name))
        if not zones:
            self.problem = f"CPU: {root} exposes no RAPL package zone"
            return
        try:
            for zone in zones:
                int((zone / "energy_uj").read_text())
        except PermissionError:
            self.problem = f"CPU: RAPL counters in {root} are not readable (root only)"
            return
        except (OSError, ValueError) as exc:
            self.problem = f"CPU: RAPL counters in {root} cannot be read: {exc}"
            return
        self.zones = zones

    def read_uj(self) -> list[int]:
        return [int((zone / "energy_uj").read_text()) for zone in self.zones]

    def joules_between(self, before: list[int], after: list[int]) -> float:
        total = 0
        for zone, start, end in zip(self.zones, before, after, strict=True):
            delta = end - start
            if delta < 0:  # the counter wrapped around its range
                delta += int((zone / "max_energy_range_uj").read_text())
            total += delta
        return total / 1e6


class NvmlCounters:
    """Total energy of every NVIDIA GPU since the driver loaded (Volta or newer)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.problem: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            for handle in handles:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except ImportError:
            self.problem = "GPU: nvidia-ml-py (pynvml) is not installed"
            return
        except Exception as exc:  # NVMLError_* when there is no driver or no GPU
            self.problem = f"GPU: NVML unavailable ({type(exc).__name__}: {exc})"
            return
        if not handles:
            self.problem = "GPU: NVML reports no GPU"
            return
        self.handles = handles

    def read_mj(self) -> list[int]:
        import pynvml

        return [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]


class EnergyMeter:
    """``with EnergyMeter() as meter: ...`` then ``meter.report``."""

    def __init__(self, powercap: Path = POWERCAP, gpu: bool = True) -> None:
        self._rapl = RaplCounters(powercap)
        self._nvml = NvmlCounters() if gpu else None
        self._start = 0.0
        self._cpu_before: list[int] = []
        self._gpu_before: list[int] = []
        self.report: EnergyReport | None = None

    def __enter__(self) -> "EnergyMeter":
        self._cpu_before = self._rapl.read_uj() if self._rapl.zones else []
        self._gpu_before = self._nvml.read_mj() if self._nvml and self._nvml.handles else []
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        duration = time.perf_counter() - self._start
        sources, unavailable = [], []
        cpu = gpu = None
        if self._rapl.zones:
            cpu = self._rapl.joules_between(self._cpu_before, self._rapl.read_uj())
            sources.append(f"RAPL ({len(self._rapl.zones)} CPU package(s))")
        elif self._rapl.problem:
            unavailable.append(self._rapl.problem)
        if self._nvml is not None and self._nvml.handles:
            after = self._nvml.read_mj()
            gpu = sum(b - a for a, b in zip(self._gpu_before, after, strict=True)) / 1e3
            sources.append(f"NVML ({len(self._nvml.handles)} GPU(s))")
        elif self._nvml is not None and self._nvml.problem:
            unavailable.append(self._nvml.problem)
        self.report = EnergyReport(duration, cpu, gpu, sources, unavailable)
