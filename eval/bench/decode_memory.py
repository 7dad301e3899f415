"""Peak memory of photos decoded at once, with and without the server's decode budget.

``python -m eval.bench.decode_memory [--uploads 8] [--budget-mb 1024]`` decodes a 59-megapixel
16-bit grey PNG (115 KB on disk, the kind of upload that took a server from 2 to 5 GB) in
``--uploads`` threads at once, each run in a fresh process, and prints the peak resident memory
above the process's start: without a budget, and with ``engine.images.DecodeBudget``.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

from engine.images import DecodeBudget, decode_image

WIDTH, HEIGHT = 8000, 7400  # 59.2 megapixels


def huge_png() -> bytes:
    pixels = np.zeros((HEIGHT, WIDTH), dtype=np.uint16)
    pixels[::97] = 40_000
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", optimize=True)
    return out.getvalue()


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def measure(uploads: int, budget_mb: int) -> dict:
    """Decode ``uploads`` photos at once in this process; peak and final memory above the start."""
    data = huge_png()
    budget = DecodeBudget(budget_mb * 2**20) if budget_mb else None
    start, peak, done = resident_mb(), [0.0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.perf_counter()
    threads = [threading.Thread(target=decode_image, args=(data,), kwargs={"budget": budget, "max_pixels": 60_000_000})
               for _ in range(uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    done.set()
    watcher.join()
    return {"peak_mb": round(peak[0] - start), "after_mb": round(resident_mb() - start), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--budget-mb", type=int, default=1024)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child run's budget
    args = parser.parse_args()
    if args.one is not None:
        print(measure(args.uploads, args.one))
        return
    for budget in (0, args.budget_mb):
        child = subprocess.run([sys.executable, "-m", "eval.bench.decode_memory", "--uploads", str(args.uploads),
                                "--one", str(budget)], capture_output=True, text=True, check=True)
        label = f"budget {budget} MB" if budget else "no budget"
        print(f"{args.uploads} concurrent 59 MP 16-bit PNG decodes, {label}: {child.stdout.strip()}")


if __name__ == "__main__":
    main()
