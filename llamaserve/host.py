"""What this machine offers: physical cores, free and resident memory, GPU offload.

Probes of the host, read when settings get their defaults and when a model is loaded; nothing
here decides policy.
"""

from __future__ import annotations

import os
import platform
import subprocess


def physical_cores() -> int:
    """Physical cores available to this process (llama.cpp gains nothing from SMT siblings)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    logical = logical or 1
    system = platform.system()
    cores: int | None = None
    if system == "Linux":
        try:
            pairs: set[tuple[str, str]] = set()
            physical = core = ""
            with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
                for line in cpuinfo:
                    key, _, value = line.partition(":")
                    key = key.strip()
                    if key == "physical id":
                        physical = value.strip()
                    elif key == "core id":
                        core = value.strip()
                    elif not line.strip() and core:
                        pairs.add((physical, core))
                        physical = core = ""
            if core:
                pairs.add((physical, core))
            cores = len(pairs) or None
        except OSError:
            cores = None
    elif system == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.physicalcpu"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
            cores = int(out.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            cores = None
    # Never more than the CPUs this process may run on (containers, taskset).
    return max(1, min(cores or logical, logical))


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), to measure what a load really took."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def default_max_memory(fraction: float = 0.8) -> int | None:
    """A fraction of the memory available now (MemAvailable on Linux, free pages elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * fraction)
    except (OSError, ValueError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * fraction)
    except (OSError, ValueError, AttributeError):
        return None


def resolve_gpu_layers(value: int | str) -> int:
    """`auto`: every layer when llama.cpp was built with a GPU backend, else none."""
    if value != "auto":
        return int(value)
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0
