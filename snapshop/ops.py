"""The `snapshop` commands of running a shop's search in production: report, tune, reindex,
backup, restore. Registered on the CLI's app by ``register``; errors become exit codes there too."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

LogOpt = Annotated[Optional[Path], typer.Option("--log", help="The query log [SNAPSHOP_ANALYTICS__PATH].")]
DaysOpt = Annotated[float, typer.Option(help="Use the searches of the last this many days.")]


def report(
    log: LogOpt = None,
    days: DaysOpt = 30.0,
    top: Annotated[int, typer.Option(help="Queries per list.")] = 20,
    clusters: Annotated[int, typer.Option(help="Clusters of unmet photo searches.")] = 5,
    nearest: Annotated[bool, typer.Option(help="Show the shop's nearest products to unmet photos (opens the "
                                                "store and loads the model).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Top searches, zero-result and "nothing close" ones, click-through by position, unmet photos."""
    from engine.analytics.report import build_report

    settings, query_log = _open_log(log)
    with query_log, _nearest(settings, nearest) as near:
        result = build_report(query_log, time.time() - days * 86400, top=top, clusters=clusters, nearest=near)
    typer.echo(json.dumps(result.as_dict(), indent=2) if as_json else format_report(result))


def _open_log(log: Path | None):
    """The settings and the query log the report and tune read (``log`` or the settings' path);
    a missing log ends the command with what to turn on."""
    from engine.analytics.log import QueryLog
    from snapshop.cli import build_settings, fail

    settings = build_settings()
    path = log or settings.analytics.path
    if not path.exists():
        fail(f"no query log at {path}: turn search analytics on (SNAPSHOP_ANALYTICS__ENABLED=true) and serve")
    return settings, QueryLog(path, settings.analytics.retention_days)


class _nearest:
    """The store's nearest products for the report, or None when not wanted or the store is busy."""

    def __init__(self, settings, wanted: bool):
        self.settings, self.wanted, self.store = settings, wanted, None

    def __enter__(self):
        from engine.analytics.report import store_nearest
        from engine.errors import StoreUnavailable
        from engine.model_loading import load_encoder
        from engine.store import open_store

        if not self.wanted:
            return None
        encoder = load_encoder(self.settings.model)
        try:
            self.store = open_store(self.settings.store, encoder.info)
        except StoreUnavailable as e:  # a running server holds it: the report without nearest products
            typer.echo(f"note: {e}; nearest products left out (GET /analytics/report has them)", err=True)
            return None
        return store_nearest(self.store)

    def __exit__(self, *exc):
        if self.store is not None:
            self.store.close()


def format_report(result) -> str:
    """The report as text for a terminal."""
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(result.by_kind.items()))
    lines = [f"{result.searches} searches ({kinds}), {result.sessions} sessions, nothing close "
             f"{100 * result.nothing_close_share:.1f} %, median {result.median_latency_ms} ms; "
             f"events: {result.events or 'none'}"]
    for title, rows in (("top searches", result.top_queries), ("zero results", result.zero_result_queries),
                        ("nothing close", result.nothing_close_queries)):
        lines.append(f"\n{title}:")
        lines += [f"  {row.count:>6}  {row.text}" for row in rows] or ["  (none)"]
    lines.append("\nclick-through by position:")
    lines += [f"  {row.position:>3}  {100 * row.rate:5.1f} %  ({row.clicks}/{row.impressions})"
              for row in result.click_through]
    lines.append("\nunmet photo searches (clusters):")
    for cluster in result.unmet_photos:
        near = "; ".join(f"{pid} {title}" for pid, title in (cluster.nearest[0] if cluster.nearest else []))
        lines.append(f"  {cluster.searches:>6} searches, e.g. photo {cluster.examples[0][:12]}; nearest: {near or '-'}")
    if not result.unmet_photos:
        lines.append("  (none)")
    return "\n".join(lines)


def tune(
    log: LogOpt = None,
    days: DaysOpt = 90.0,
    write: Annotated[bool, typer.Option("--write", help="Write the fitted weights to the env file (only when "
                                                       "they rank the held-back sessions better).")] = False,
    env_file: Annotated[Path, typer.Option(help="The settings file --write updates.")] = Path(".env"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Fit the ranker weights to logged clicks; report before/after on held-back sessions."""
    from engine.analytics.tune import tune as fit_weights
    from engine.signals import RankerWeights
    from snapshop.cli import fail

    settings, query_log = _open_log(log)
    with query_log:
        result = fit_weights(query_log, RankerWeights(**settings.search.weights), time.time() - days * 86400)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        typer.echo(format_tune(result))
    if write:
        if not result.improved:
            fail("not written: the fitted weights do not rank the held-back sessions better", code=1)
        changed = {name: value for name, value in result.after.items() if value != result.before[name]}
        write_env(env_file, "SNAPSHOP_SEARCH__WEIGHTS", json.dumps({**settings.search.weights, **changed}))
        typer.echo(f"wrote SNAPSHOP_SEARCH__WEIGHTS to {env_file}")


def format_tune(result) -> str:
    lines = [f"{'signal':<12}{'before':>8}{'after':>8}"]
    lines += [f"{name:<12}{result.before[name]:>8.3g}{result.after[name]:>8.3g}" for name in result.before]
    lines.append(f"MRR of the chosen result: fitted on {result.train_searches} searches "
                 f"{result.train_mrr_before:.3f} -> {result.train_mrr_after:.3f}; held back "
                 f"({result.held_back_searches} searches, other sessions) "
                 f"{result.held_back_mrr_before:.3f} -> {result.held_back_mrr_after:.3f}")
    return "\n".join(lines)


def write_env(path: Path, name: str, value: str) -> None:
    """Set ``name`` in a .env file (replacing its line, keeping every other line), atomically."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    line = f"{name}='{value}'"
    kept = [old for old in lines if old.split("=", 1)[0].strip() != name]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join([*kept, line]) + "\n", encoding="utf-8")
    temporary.replace(path)


StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Embedded store directory [SNAPSHOP_STORE__PATH].")]


def backup(
    dest: Annotated[Path, typer.Argument(help="A new folder for the backup.")],
    store: StoreOpt = None,
) -> None:
    """A consistent copy of the embedded store (stop a server that holds it first)."""
    from engine.model_loading import load_encoder
    from engine.store import open_store
    from engine.store.backup import backup_store
    from snapshop.cli import build_settings

    settings = build_settings(store)
    with open_store(settings.store, load_encoder(settings.model).info) as vector_store:
        manifest = backup_store(vector_store, dest)
    typer.echo(f"backed up '{manifest.collection}' ({manifest.products} products) to {dest}")


def restore(
    source: Annotated[Path, typer.Argument(help="A folder made by `snapshop backup`.")],
    store: StoreOpt = None,
    collection: Annotated[Optional[str], typer.Option(help="Restore as this collection (the backed-up one's "
                                                            "name by default).")] = None,
) -> None:
    """Restore a backup into a store path where that collection does not exist yet, then check it opens."""
    from engine.model_loading import load_encoder
    from engine.store import open_store
    from engine.store.backup import restore_store
    from snapshop.cli import build_settings, fail

    settings = build_settings(store)
    manifest = restore_store(source, settings.store.path, collection)
    settings.store.collection = collection or manifest.collection
    with open_store(settings.store, load_encoder(settings.model).info) as vector_store:
        products = vector_store.count()
    if products != manifest.products:
        fail(f"the restored store holds {products} products, the backup {manifest.products}")
    typer.echo(f"restored '{settings.store.collection}' ({products} products) into {settings.store.path}")


def reindex(
    catalog: Annotated[Optional[Path], typer.Argument(help="The catalog to build the new index from.")] = None,
    store: StoreOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="The new index's model [SNAPSHOP_MODEL__NAME].")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="The new index's heads [SNAPSHOP_MODEL__WEIGHTS].")] = None,
    drop_previous: Annotated[bool, typer.Option("--drop-previous", help="Delete the index the last switch "
                                                                       "replaced, and build nothing.")] = False,
) -> None:
    """Build a new index beside the live one while search goes on, check it, switch to it at once.

    A running server follows the switch by itself (SNAPSHOP_STORE__ALIAS_POLL_S); the old index is
    kept until --drop-previous."""
    from engine.model_loading import load_encoder
    from engine.store.aliases import EdgeAliases
    from ingest.catalog import read_catalog
    from ingest.reindex import reindex as build
    from snapshop.cli import build_settings, fail

    settings = build_settings(store, model=model)
    if weights is not None:
        settings.model.weights = weights
    if drop_previous:
        entry = EdgeAliases(settings.store.path).entry(settings.store.collection)
        if entry is None or not entry.previous:
            fail(f"'{settings.store.collection}' was never switched: there is no previous index to drop")
        EdgeAliases(settings.store.path).drop(entry.previous)
        typer.echo(f"dropped '{entry.previous}'")
        return
    if catalog is None:
        fail("give the catalog to build the new index from")
    parsed = read_catalog(catalog)
    report = build(parsed, load_encoder(settings.model), settings, progress=_progress())
    check = report.check
    typer.echo(f"'{report.alias}' now serves '{report.collection}' ({check.products} products, self-recall@10 "
               f"{check.recall_at_10:.3f} on {check.sampled} products; {report.seconds:.1f} s); the previous index "
               f"'{report.previous}' is kept until `snapshop reindex --drop-previous`")


def bench_api(
    catalog: Annotated[Path, typer.Option(help="Real catalog whose first products are served.")],
    products: Annotated[int, typer.Option(help="Products in the served store.")] = 500,
    concurrency: Annotated[str, typer.Option(help="Requests in flight, comma-separated levels.")] = "1,4,16",
    seconds: Annotated[float, typer.Option(help="Time each level is measured for.")] = 10.0,
    work_dir: Annotated[Path, typer.Option(help="The served store is built (once) here.")] = Path("var/bench"),
    out: Annotated[Path, typer.Option(help="Where the figures are written as JSON.")] = Path("var/bench/api.json"),
) -> None:
    """Throughput through the HTTP API (a `snapshop serve` process) at several concurrencies."""
    from eval.bench.throughput import run_throughput
    from snapshop.cli import build_settings, fail

    try:
        levels = tuple(int(part) for part in concurrency.split(",") if part.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        fail(f"--concurrency takes comma-separated positive whole numbers, got '{concurrency}'")
    result = run_throughput(build_settings(), catalog, products, levels, seconds, work_dir,
                            say=lambda message: typer.echo(f"bench-api: {message}", err=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    typer.echo(f"{'kind':<6}{'conc':>5}{'req/s':>9}{'x c1':>7}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
    for level in result["levels"]:
        typer.echo(f"{level['kind']:<6}{level['concurrency']:>5}{level['per_second']:>9}{level['speedup']:>7}"
                   f"{level['p50_ms']:>9}{level['p99_ms']:>9}{level['failed']:>8}")
    typer.echo(f"wrote {out}")


def _progress() -> bool:
    import os
    import sys

    return sys.stderr.isatty() or bool(os.environ.get("SNAPSHOP_PROGRESS"))


def register(app: typer.Typer) -> None:
    """Add these commands to the CLI's app."""
    app.command()(report)
    app.command()(tune)
    app.command()(backup)
    app.command()(restore)
    app.command()(reindex)
    app.command("bench-api")(bench_api)
