"""Speed and scale benchmarks: encoders, ingest, and queries at 100k-1M products.

Every figure is measured beside a baseline in the same run (the machine's matmul ceiling, the
encoder alone, exact search) and reported as a ratio, so a busy machine moves both alike.
"""

from eval.bench.report import format_table, write_report
from eval.bench.runner import SECTIONS, BenchConfig, run_bench

__all__ = ["SECTIONS", "BenchConfig", "format_table", "run_bench", "write_report"]
