"""What the machine can do and what a process holds: the baselines other figures are divided by."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, min_seconds: float = 0.5) -> float:
    """Dense matmul throughput of this CPU in this run: the encoders' practical FLOP ceiling."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # first call picks kernels
    times = repeat_timed(lambda: torch.mm(a, b), min_repeats=3, min_seconds=min_seconds)
    return 2 * size**3 / float(np.median(times)) / 1e9


def count_flops(function: Callable[[], object]) -> int:
    """FLOPs of the matmuls and convolutions ``function`` runs (torch's own counter)."""
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return int(counter.get_total_flops())


def repeat_timed(function: Callable[[], object], min_repeats: int = 3, min_seconds: float = 1.0,
                 max_repeats: int = 1000) -> list[float]:
    """Seconds of each call, repeated until both minimums are reached."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - started < min_seconds):
        t = time.perf_counter()
        function()
        times.append(time.perf_counter() - t)
    return times


def rss_bytes() -> int:
    """Resident memory of this process now."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def anonymous_rss_bytes() -> int | None:
    """The part of the resident memory that no file backs: it cannot be given back to the page cache
    (the rest is mapped store files, which the kernel may evict and read again)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (what the store takes on disk)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load_average() -> list[float] | None:
    """The 1/5/15-minute load: other work on the machine slows every figure of a run alike."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "native_bf16": bf16,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_start": load_average(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
