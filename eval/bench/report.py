"""The bench report: acceptance targets, a printable table, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

HUNDRED_K, MILLION = "100000", "1000000"


def acceptance(report: dict) -> list[dict]:
    """Each target with the measured value and whether it is met (None: not measured in this run)."""
    scale = report.get("scale", {})
    at_100k = scale.get(HUNDRED_K, {}).get("queries", {})
    at_1m = scale.get(MILLION, {})
    recalls = [value for size, entry in scale.items() if isinstance(entry, dict) and "queries" in entry
               for kind, modes in entry["queries"].items() for mode, figures in modes.items()
               for value in figures.get("recall@10", {}).values()]
    ingest = report.get("ingest", {})
    return [
        _target("text query p50 at 100k products (ms)", _get(at_100k, "text", "unfiltered", "p50_ms"), "<=", 20),
        # Issue 12's bound, with the appearance trunk on two crops, the joint one on three, and verification.
        _target("photo query p50 at 100k products (ms)", _get(at_100k, "photo", "unfiltered", "p50_ms"), "<=", 150),
        _target("HNSW recall@10 vs exact, worst vector/kind/filter (all sizes)", min(recalls) if recalls else None,
                ">=", 0.95),
        _target("products loaded into the embedded store", max((int(s) for s in scale if s.isdigit()), default=None),
                ">=", 1_000_000),
        # Issue 15's "filtered p99 <= 50 ms with the store warm" is the store's: a photo's encoding alone
        # takes 100+ ms on these cores (issue 12 budgets a photo query 150 ms at 100k); the end to
        # end p99s are in the table beside it.
        _target("filtered query p99 at 1M products in the store, worst kind (ms)",
                _worst(at_1m, "store_p99_ms"), "<=", 50),
        _target("filtered text query p99 at 1M products, end to end (ms)",
                _get(at_1m.get("queries", {}), "text", "filtered", "p99_ms"), "<=", 50),
        _target("1M products loaded and indexed, end to end (s)", _get(at_1m, "load", "total_s"), "<=", 900),
        _target("ingest end to end / encoder only", ingest.get("end_to_end_over_encoder_only"), ">=", 0.8),
    ]


def _worst(at_size: dict, figure: str):
    """The highest ``figure`` of the filtered queries of every kind at one size (None if one lacks it)."""
    values = [_get(at_size.get("queries", {}), kind, "filtered", figure) for kind in ("text", "photo", "photo_text")]
    return max(values) if values and None not in values else None


def _get(tree: dict, *keys):
    for key in keys:
        tree = tree.get(key, {}) if isinstance(tree, dict) else {}
    return tree if tree != {} else None


def _target(name: str, value, op: str, bound) -> dict:
    met = None if value is None else (value <= bound if op == "<=" else value >= bound)
    return {"target": name, "bound": f"{op} {bound}", "value": value, "met": met}


def write_report(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench.json"
    path.write_text(json.dumps(report, indent=2))
    return path


def format_table(report: dict) -> str:
    lines = _machine_lines(report)
    for name, figures in report.get("encoder", {}).items():
        lines += _encoder_lines(name, figures)
    if "quality" in report:
        lines += _quality_lines(report["quality"])
    if "ingest" in report:
        i = report["ingest"]
        summary = (f"ingest of {i['products']} real products: end to end {i['end_to_end_per_s']}/s, "
                   f"encoder only {i['encoder_only_per_s']}/s -> {i['end_to_end_over_encoder_only']:.0%}")
        lines += ["", summary, "  stages (s): " + ", ".join(f"{k} {v}" for k, v in i["stages_s"].items())]
    for size, entry in report.get("scale", {}).items():
        if isinstance(entry, dict) and "load" in entry:
            lines += _scale_lines(int(size), entry)
    lines += ["", "acceptance targets"]
    for t in report.get("targets", []):
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"  {t['target']:<62} {t['bound']:>12}  {_fmt(t['value']):>10}  {verdict}")
    return "\n".join(lines)


def _machine_lines(report: dict) -> list[str]:
    m = report["machine"]
    ceilings = ", ".join(f"{k} {v} GFLOP/s" for k, v in m.get("matmul_gflops", {}).items())
    machine = (f"machine: {m['cpus']} CPUs ({m['cpu']}), torch {m['torch_threads']} threads, load average "
               f"{m.get('load_average_start')} -> {m.get('load_average_end')}; matmul 2048x2048: {ceilings}")
    return [machine, f"model: {report['model']}"]


def _encoder_lines(name: str, figures: dict) -> list[str]:
    header = (f"encoder {name:<5} {'per s':>9} {'ms/call':>9} {'GFLOP/item':>11} {'GFLOP/s':>9} "
              f"{'of ceiling':>10} {'vs fp32':>8}")
    lines = ["", header]
    for kind in ("image", "text"):
        for key, e in figures[kind].items():
            if isinstance(e, dict):
                lines.append(f"  {kind} {key.replace('_', ' '):<10} {e['per_s']:>9} {e['ms_per_call']:>9} "
                             f"{e['gflop_per_item']:>11} {e['achieved_gflops']:>9} {e['ceiling_fraction']:>10.1%} "
                             f"{_fmt(e.get('speedup_vs_fp32')):>8}")
            else:
                lines.append(f"  {kind} {key.replace('_', ' ')}: {e}x")
    return lines


def _quality_lines(quality: dict) -> list[str]:
    lines = ["", f"precision quality: titles -> photos, {quality['products']} held-out products"]
    for name, q in quality.items():
        if isinstance(q, dict):
            extra = ""
            if "drop_points_vs_fp32" in q:
                extra = f"  drop vs fp32 (points) {q['drop_points_vs_fp32']}  within 1 point: {q['within_1_point']}"
            lines.append(f"  {name:<5} R@1 {q['recall@1']:.4f}  R@10 {q['recall@10']:.4f}  MRR {q['mrr']:.4f}{extra}")
    return lines


def _scale_lines(size: int, entry: dict) -> list[str]:
    load = entry["load"]
    if load.get("reused"):
        load = {**load, "upsert_s": "-", "upsert_per_s": "-", "batch": "-", "optimize_s": "(a kept store, not loaded"
                " in this run)", "rss_bytes_per_product": "-", "raw_vector_bytes_per_product": "-", "rss_over_raw": "-",
                "disk_over_raw": "-"}
    copies = ", ".join(f"{k} {v}" for k, v in entry["copy_cosine_to_source"].items())
    title = f"{size:,} products (copies of real ones; mean cosine of a copy to its source: {copies})"
    timing = (f"  load: upsert {load['upsert_s']} s ({load['upsert_per_s']}/s, batches of {load['batch']}), "
              f"graphs built while loading {load.get('index_while_loading_s', '-')} s, then optimize "
              f"{load['optimize_s']} s: end to end {load.get('total_s', '-')} s; reopen {load['reopen_s']} s, "
              f"files read into memory {load.get('warm_bytes', 0) / 1e9:.1f} GB in {load.get('warm_s', '-')} s")
    memory = (f"  memory {load['rss_bytes_per_product']} B/product RSS "
              f"({load.get('rss_anonymous_bytes_per_product', '-')} B anonymous, the rest mapped store files), "
              f"{load['disk_bytes_per_product']} B/product "
              f"on disk; raw vectors {load['raw_vector_bytes_per_product']} B -> RSS x{load['rss_over_raw']}, "
              f"disk x{load['disk_over_raw']}; of that on disk, photos' local features "
              f"{load.get('local_features_disk_bytes_per_product', '-')} B/product (kept out of memory)")
    header = (f"  {'query':<11} {'filters':<10} {'p50 ms':>8} {'p99 ms':>8} {'exact p50':>9} {'engine/exact':>12} "
              f"{'ANN p50':>8} {'selectivity':>11}  recall@10 (within 1 % of the 10th's distance)")
    warm = entry.get("warmup") or {}
    lines = ["", title, timing, memory,
             (f"  cold start: the first {warm.get('queries', 0)} queries after opening the store (untimed below): "
              f"p50 {warm.get('p50_ms')} ms, p99 {warm.get('p99_ms')} ms"), header]
    for kind, modes in entry["queries"].items():
        for mode, q in modes.items():
            if mode == "cached":
                lines.append(f"  {kind:<11} {'(repeat)':<10} {q['p50_ms']:>8} {q['p99_ms']:>8}   "
                             f"uncached/cached p50 x{q['uncached_over_cached_p50']}")
                continue
            tolerant = q.get("recall@10_epsilon", {})
            recall = " ".join(f"{k} {v:.3f}" + (f" ({tolerant[k]:.3f})" if k in tolerant else "")
                              for k, v in q["recall@10"].items())
            lines.append(f"  {kind:<11} {mode:<10} {q['p50_ms']:>8} {q['p99_ms']:>8} {q['exact_p50_ms']:>9} "
                         f"{q['engine_over_exact_p50']:>12} {q['ann_p50_ms']:>8} {q['selectivity']:>11.4f}  {recall}")
            if "stages_p50_ms" in q:
                stages = ", ".join(f"{name} {ms}" for name, ms in q["stages_p50_ms"].items())
                lines.append(f"  {'':<11} {'':<10} stages p50 ms: {stages}; end to end with decode p50 "
                             f"{q.get('end_to_end_p50_ms')} ms; in the store p50 {q.get('store_p50_ms')} ms, "
                             f"p99 {q.get('store_p99_ms')} ms")
    lines.append(f"  hnsw_ef sweep, recall@10 / p50 of one search of 10 (setting: {entry['hnsw_ef']}):")
    for using, by_ef in entry["hnsw_ef_sweep"].items():
        sweep = "  ".join(f"ef {ef}: {v['recall@10']:.3f} / {v['p50_ms']} ms" for ef, v in by_ef.items())
        lines.append(f"    {using:<6} {sweep}")
    return lines


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
