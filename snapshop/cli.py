"""The `snapshop` command: ingest, search, train, list models, delete.

The CLI builds the one Settings object (environment, then these options) and passes it down;
it alone turns engine errors into messages and exit codes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from engine.errors import SnapshopError
from engine.settings import Settings
from engine.signals import SIGNALS


class _Commands(TyperGroup):
    """Every command: an engine error, whichever command raises it, is one line on stderr and
    exit code 2 (the one place the CLI turns engine errors into exit codes)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SnapshopError as e:
            fail(str(e))


app = typer.Typer(help="snapshop: visual product search for online shops.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=_Commands)

StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Embedded store directory [SNAPSHOP_STORE__PATH].")]
UrlOpt = Annotated[Optional[str], typer.Option("--qdrant-url", help="Qdrant server URL [SNAPSHOP_STORE__URL].")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model name [SNAPSHOP_MODEL__NAME].")]


def build_settings(store: Path | None = None, url: str | None = None, model: str | None = None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in e.errors())
        fail(f"bad settings (SNAPSHOP_* environment or .env): {problems}")
    if store is not None:
        settings.store.path = store
    if url is not None:
        settings.store.url = url
    if model is not None:
        settings.model.name = model
    # A re-indexed collection name stands for an index made by a model of its own (engine.store.aliases).
    from engine.store.aliases import live_settings

    return live_settings(settings)


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.environ.get("SNAPSHOP_MODEL__OFFLINE") else None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # transformers is optional for online open_clip models
        pass


@app.command()
def ingest(
    catalog: Annotated[Path, typer.Argument(help="Catalog file: .csv, .tsv, .jsonl or .parquet.")],
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    model: ModelOpt = None,
    prune: Annotated[bool, typer.Option(help="Delete stored products that are not in the catalog.")] = False,
    force: Annotated[bool, typer.Option(
        help="Let --prune delete more than SNAPSHOP_INGEST__PRUNE_MAX_SHARE of the store.")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="Write nothing; say what would be added, re-embedded and (with --prune) deleted.")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary as JSON here.")] = None,
) -> None:
    """Embed a catalog's photos and titles into the store (idempotent, resumable)."""
    from engine.model_loading import load_encoder
    from engine.store import open_store
    from ingest.catalog import read_catalog
    from ingest.pipeline import ingest_catalog

    settings = build_settings(store, qdrant_url, model)
    parsed = read_catalog(catalog)
    encoder = load_encoder(settings.model)
    with open_store(settings.store, encoder.info) as vector_store:
        summary = ingest_catalog(parsed, encoder, vector_store, settings.ingest, prune=prune,
                                 progress=sys.stderr.isatty() or bool(os.environ.get("SNAPSHOP_PROGRESS")),
                                 force=force, dry_run=dry_run)
        total = vector_store.count()
    data = summary.as_dict()
    if dry_run:
        _echo_dry_run(catalog, data, total, report)
        return
    typer.echo(
        f"{catalog}: {data['rows']} rows -> {data['added']} added, {data['updated']} re-embedded, "
        f"{data['payload_only']} payload updated, {data['unchanged']} unchanged, {data['deleted']} deleted, "
        f"{data['skipped']} skipped, {data['bad_images']} bad images; store holds {total} products "
        f"({data['seconds'].get('total', 0):.1f} s)"
    )
    for problem in data["problems"][:50]:
        typer.echo(f"  skipped {problem}", err=True)
    if len(data["problems"]) > 50:
        typer.echo(f"  ... and {len(data['problems']) - 50} more (see --report)", err=True)
    for warning in data["warnings"]:
        typer.echo(f"  warning: {warning}", err=True)
    if report:
        report.write_text(json.dumps(data, indent=2))
    if summary.stored == 0 and data["rows"] > 0:
        raise typer.Exit(1)


def _echo_dry_run(catalog: Path, data: dict, total: int, report: Path | None) -> None:
    typer.echo(
        f"dry run, nothing written: {catalog}: {data['rows']} rows -> would add {data['added']}, re-embed "
        f"{data['updated']}, update the payload of {data['payload_only']}, leave {data['unchanged']} unchanged, "
        f"delete {data['deleted']} of the {total} stored; {data['skipped']} rows skipped"
    )
    for product_id in data["pruned"][:50]:
        typer.echo(f"  would delete {product_id}")
    if len(data["pruned"]) > 50:
        typer.echo(f"  ... and {len(data['pruned']) - 50} more (see --report)")
    for warning in data["warnings"]:
        typer.echo(f"  warning: {warning}", err=True)
    if report:
        report.write_text(json.dumps(data, indent=2))


@app.command()
def search(
    text: Annotated[Optional[str], typer.Option("--text", "-t", help="What the shopper typed.")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="A photo to search with.")] = None,
    crop: Annotated[Optional[str], typer.Option(
        help="Search only this box of the photo: x,y,w,h as fractions of its width and height.")] = None,
    category: Annotated[Optional[list[str]], typer.Option(help="Only these categories (repeatable).")] = None,
    min_price: Annotated[Optional[float], typer.Option(help="Lowest price.")] = None,
    max_price: Annotated[Optional[float], typer.Option(help="Highest price.")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="How many products.")] = 10,
    mix: Annotated[Optional[float], typer.Option(help="Text's share in photo+text queries (0..1).")] = None,
    weight: Annotated[Optional[list[str]], typer.Option(
        help=f"Ranker weight override NAME=VALUE, repeatable ({SIGNALS.help_text()}).")] = None,
    sort: Annotated[str, typer.Option(help="relevance, price_asc, price_desc, newest or popularity (sorted: the "
                                            "products above the relevance floor).")] = "relevance",
    offset: Annotated[Optional[int], typer.Option(help="Skip this many products (pages of --k).")] = None,
    floor: Annotated[Optional[float], typer.Option(help="Relevance floor of a sorted list (0..1).")] = None,
    attributes: Annotated[Optional[str], typer.Option(
        help='Attribute filters as JSON, e.g. \'{"colour": ["Black"], "year": {"min": 2015}}\'.')] = None,
    out_of_stock: Annotated[Optional[str], typer.Option(help="hide, demote or show out-of-stock products.")] = None,
    explain: Annotated[bool, typer.Option(help="Show each signal's share of the score.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Search by --text, --image, or both, with optional filters."""
    from engine.images import load_image_file
    from engine.model_loading import load_encoder
    from engine.regions import Region
    from engine.search import Searcher, SearchQuery
    from engine.store import SearchFilters, open_store

    settings = build_settings(store, qdrant_url, model)
    weights = _parse_weights(weight or [])
    region = Region.parse(crop) if crop else None
    if region is not None and image is None:
        fail("--crop is a box in the photo: give --image too")
    photo = load_image_file(image) if image else None
    filters = SearchFilters(tuple(category or ()), min_price, max_price)
    encoder = load_encoder(settings.model)
    with open_store(settings.store, encoder.info) as vector_store:
        if vector_store.count() == 0:
            fail(f"the store at {settings.store.url or settings.store.path} is empty: run `snapshop ingest` first")
        searcher = Searcher(encoder, vector_store, settings.search)
        if settings.search.shopper_centre == "auto":  # as the server would search now
            searcher.use_shopper_centre(_learnt_centre(settings, encoder.info))
        filters = searcher.attribute_filters(filters, _parse_json_object(attributes, "--attributes"))
        response = searcher.search(
            SearchQuery(text=text, image=photo, filters=filters, k=k, photo_text_mix=mix, weights=weights,
                        sort=sort, offset=offset, floor=floor, out_of_stock=out_of_stock, crop=region))
    if as_json:
        typer.echo(json.dumps({"nothing_close": response.nothing_close, "total": response.total,
                               "offset": response.offset,
                               "data": [{**{k_: v for k_, v in r.__dict__.items() if k_ not in ("payload", "variants")},
                                         "variants": [v["product_id"] for v in r.variants]}
                                        for r in response.results]}, indent=2))
        return
    if not response.results:
        typer.echo("no products match these filters")
        return
    if response.nothing_close:
        typer.echo("nothing close: these are the nearest products, but none looks like a match")
    typer.echo(f"{'id':>10}  {'score':>6}  {'price':>8}  {'category':<16} title")
    for r in response.results:
        price = f"{r.price:.2f}" if r.price is not None else "-"
        typer.echo(f"{r.product_id:>10}  {r.score:6.3f}  {price:>8}  {(r.category or '-')[:16]:<16} {r.title}")
        if explain:
            typer.echo(" " * 12 + "  ".join(f"{name} {share:.0%}" for name, share in r.explanation.items()))


def _parse_json_object(text: str | None, option: str) -> dict | None:
    from engine.errors import InvalidQuery

    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidQuery(f"{option} wants a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise InvalidQuery(f"{option} wants a JSON object, got {text[:60]}")
    return value


def _parse_weights(pairs: list[str]) -> dict[str, float] | None:
    from engine.errors import InvalidQuery

    weights = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InvalidQuery(f"--weight wants NAME=NUMBER, got '{pair}'") from None
        if not sep:
            raise InvalidQuery(f"--weight wants NAME=NUMBER, got '{pair}'")
    return weights or None


@app.command()
def delete(
    product_ids: Annotated[list[str], typer.Argument(help="Product ids to delete.")],
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
) -> None:
    """Delete products from the store by id (no model is loaded: the store says which made it)."""
    from engine.products import Products
    from engine.store import open_existing_store

    settings = build_settings(store, qdrant_url)
    with open_existing_store(settings.store) as vector_store:
        deleted, missing = Products(vector_store).delete(product_ids)
    typer.echo(f"deleted {len(deleted)} products" + (f"; not found: {', '.join(sorted(missing))}" if missing else ""))


@app.command()
def train(
    catalog: Annotated[Path, typer.Option(help="Catalog with photos and titles to learn from.")],
    out: Annotated[Path, typer.Option(help="Where to write the trained heads (.pt).")],
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 40,
    unlocked_blocks: Annotated[int, typer.Option(
        min=0, help="The image trunk's last blocks trained with the heads (0: heads only, towers locked; "
                    "1 gained 0.015 R@10 at 10 epochs but 40 epochs of it take over 30 minutes on 2 cores).")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of products held out for validation.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the split and the training.")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N products (quick runs).")] = None,
    look: Annotated[bool, typer.Option(
        help="Also train the appearance head (shopper photos against catalog photos).")] = True,
    look_from: Annotated[Optional[Path], typer.Option(
        help="Instead of training an appearance head, keep the one in these heads (it reads only the look "
             "tower, which this training leaves as it is).")] = None,
    look_only: Annotated[bool, typer.Option(
        help="Only (re)train the appearance head of the current heads (SNAPSHOP_MODEL__WEIGHTS or the "
             "registry's), keeping them.")] = False,
    colour: Annotated[bool, typer.Option(
        help="The joint photo vector also reads the photo's colour histogram (validation MRR of titles "
             "against photos 0.471 -> 0.515 on cached features).")] = True,
    second_head: Annotated[bool, typer.Option(
        help="A second joint head, trained apart, also reading the image trunk's stages; the joint vector is "
             "both heads' side by side (titles against photos on cached features, validation R@10 / MRR "
             "0.802 / 0.515 -> 0.821-0.828 / 0.539-0.543). Heads only.")] = True,
    features_cache: Annotated[Optional[Path], typer.Option(
        help="A folder to keep the photos' and titles' features in: a rerun on the same catalog trains "
             "the heads in seconds.")] = None,
    model: ModelOpt = None,
    device: Annotated[Optional[str], typer.Option(
        help="Where to train: cpu, cuda, cuda:1 or auto (default: SNAPSHOP_MODEL__DEVICE).")] = None,
) -> None:
    """Train the offline model's heads and image-trunk top on a catalog's image-title pairs (LiT), and its
    appearance head."""
    from engine.look_training import LookConfig
    from engine.model_loading import pick_device
    from engine.registry import resolve_model
    from engine.training import TrainConfig, TrainingPair, keep_look_head, train_lit_heads, train_look_only
    from ingest.catalog import read_catalog
    from ingest.pipeline import ImageLoader, ImageSourceError

    settings = build_settings(model=model)
    try:
        train_device = pick_device(device or settings.model.device)
        parsed = read_catalog(catalog)
        loader = ImageLoader(parsed.base_dir, settings.ingest)
        pairs = []
        for row in parsed.rows[:limit]:
            try:  # training reads local photos only: the first photo of each product
                pairs.append(TrainingPair(row.product_id, loader.resolve(row.images[0]), row.title, row.category))
            except ImageSourceError as e:
                typer.echo(f"  skipped row {row.row}: {e}", err=True)
        if look_only:
            heads = settings.model.weights or resolve_model(settings.model.name).weights_path
            report = train_look_only(pairs, heads, out, LookConfig(seed=seed), model_name=settings.model.name)
            typer.echo(f"appearance head trained on the heads of {heads}; shopper views of "
                       f"{report['val_products']} validation products, Recall@1 {report['before'].get('r1')} "
                       f"-> {report['after'].get('r1')}\nwritten to {out}; use it with SNAPSHOP_MODEL__WEIGHTS={out}")
            return
        config = TrainConfig(epochs=epochs, val_fraction=val_fraction, seed=seed, unlocked_blocks=unlocked_blocks,
                             colour_features=colour, second_head=second_head)
        result = train_lit_heads(pairs, out, config, model_name=settings.model.name,
                                 look=LookConfig(seed=seed) if look and look_from is None else None,
                                 device=train_device, features_cache=features_cache)
        if look_from is not None:
            keep_look_head(out, look_from)
    except ValueError as e:  # too few pairs to train on
        fail(str(e))
    typer.echo(
        f"trained on {result.train_products} products, validated on {result.val_products} "
        f"({len(result.skipped_images)} unreadable photos skipped) in {result.seconds:.0f} s; best epoch "
        f"{result.best_epoch}: text->image R@1 {result.val_recall_at_1:.3f}, R@10 {result.val_recall_at_10:.3f}, "
        f"MRR {result.val_mrr:.3f}"
        + "".join(f"\n  joint head {i + 1} alone: best epoch {head['best_epoch']} (tune MRR {head['tune_mrr']:.3f}), "
                  f"R@10 {head['val'].get('r10', 0):.3f}, MRR {head['val'].get('mrr', 0):.3f}"
                  for i, head in enumerate(result.heads) if len(result.heads) > 1)
        + f"\nheads written to {out}; use them with SNAPSHOP_MODEL__WEIGHTS={out}"
    )


@app.command()
def models() -> None:
    """List the registered models."""
    from engine.registry import list_models

    for spec in list_models():
        where = "offline" if spec.offline else "downloads"
        typer.echo(f"{spec.name:<45} {spec.kind:<10} {where:<10} {spec.description}")


@app.callback()
def main() -> None:
    _quiet_libraries()


PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@app.command()
def calibrate(
    photos: Annotated[Optional[list[Path]], typer.Argument(
        help="Shoppers' photos, or folders of them (every .jpg, .jpeg, .png, .webp inside): no labels needed.")] = None,
    from_log: Annotated[bool, typer.Option(
        "--from-log", help="Learn it from the photos shoppers searched with, as the query log keeps them "
                           "(their appearance vectors, never the photos), instead of photos given here.")] = False,
    log: Annotated[Optional[Path], typer.Option("--log", help="The query log [SNAPSHOP_ANALYTICS__PATH].")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the centre (.npz).")] = Path("var/shopper-centre.npz"),
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Measure what this shop's shoppers' photos have in common (engine/shopper_centre.py); search with
    SNAPSHOP_SEARCH__SHOPPER_CENTRE set to the file written."""
    from engine.model_loading import load_encoder

    settings = build_settings(store, qdrant_url, model)
    if bool(photos) == from_log:
        fail("give shoppers' photos (files or folders) or --from-log, one of the two")
    if from_log:
        path = log or settings.analytics.path
        if not path.exists():
            fail(f"no query log at {path}: turn search analytics on (SNAPSHOP_ANALYTICS__ENABLED=true) and serve")
        centre, source = _centre_from_log(path, load_encoder(settings.model).info, settings)
    else:
        centre, source = _centre_of_photos(photos, settings)
    centre.save(out)
    typer.echo(f"centre of {centre.photos} shopper photos ({source}) written to {out}; "
               f"search with it: SNAPSHOP_SEARCH__SHOPPER_CENTRE={out}")


def _learnt_centre(settings: Settings, info):
    """The centre a server with SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto learns from the query log (None
    while it holds too few photo searches, or there is no log: a server without one learns in its
    memory, which a command cannot read)."""
    from engine.analytics.centre import CentreLearner
    from engine.analytics.log import QueryLog

    if not settings.analytics.enabled or not settings.analytics.path.exists():
        return None
    learnt = []
    with QueryLog(settings.analytics.path, settings.analytics.retention_days) as query_log:
        learner = CentreLearner(query_log, info, learnt.append)
        learner.start()
        learner.close()
    return learnt[-1] if learnt else None


def _centre_from_log(path: Path, info, settings: Settings):
    """The centre learnt from the query log at ``path``, and what it was learnt from, in words."""
    from engine.analytics.centre import centre_from_log
    from engine.analytics.log import QueryLog

    with QueryLog(path, settings.analytics.retention_days) as query_log:
        centre, others = centre_from_log(query_log, info)
    left_out = f", {sum(others.values())} of other models left out" if others else ""
    return centre, f"the latest searched, from the query log {path}{left_out}"


def _centre_of_photos(photos: list[Path], settings: Settings):
    """The centre of the photos given (files, or folders of them), and what it was learnt from, in words."""
    import numpy as np

    from engine.errors import InvalidImage
    from engine.images import load_image_file
    from engine.model_loading import load_encoder
    from engine.search import Searcher
    from engine.shopper_centre import ShopperCentre
    from engine.store import open_store

    files = sorted({f for p in photos for f in ([p] if p.is_file() else p.rglob("*") if p.is_dir() else [])
                    if f.is_file() and (p.is_file() or f.suffix.lower() in PHOTO_SUFFIXES)})
    missing = [str(p) for p in photos if not p.exists()]
    if missing:
        fail(f"no such photo or folder: {', '.join(missing)}")
    encoder = load_encoder(settings.model)
    looks, skipped = [], 0
    with open_store(settings.store, encoder.info) as vector_store:
        searcher = Searcher(encoder, vector_store, settings.search.model_copy(update={"shopper_centre": None}))
        for path in files:
            try:
                looks.append(searcher.encode_photo(load_image_file(path), verify=False).look)
            except InvalidImage as e:
                skipped += 1
                typer.echo(f"  skipped {path}: {e}", err=True)
    return ShopperCentre.of(np.array(looks), encoder.info.tag), f"{skipped} unreadable skipped"


@app.command("eval")
def evaluate(
    catalog: Annotated[Path, typer.Option(help="Catalog to evaluate on (ingested into a fresh temporary store).")],
    queries: Annotated[Optional[Path], typer.Option(
        help="CSV of real shopper photos (query_image,product_id); without it, shopper-like photos are made.")] = None,
    split: Annotated[str, typer.Option(
        help="all, validation (products the model's training held out, same seed and share as its "
             "checkpoint) or train (to tune weights without touching validation).")] = "all",
    limit_products: Annotated[Optional[int], typer.Option(help="Use at most this many products.")] = None,
    limit_queries: Annotated[int, typer.Option(help="At most this many queries per set.")] = 500,
    only: Annotated[Optional[str], typer.Option(
        help="Comma-separated query sets to run: title_to_photo, describing, category, photo_plus_text, photo_for_whom, "
             "photos (all when omitted).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for eval.json and recall_at_k.png.")] = Path("var/eval"),
    centre_halves: Annotated[bool, typer.Option(
        help="Search each half of the real shopper photos (--queries) with the shopper-photo centre of the "
             "other half's photos, as a shop calibrated on earlier photos (`snapshop calibrate`).")] = False,
    centre_learnt: Annotated[bool | None, typer.Option(
        "--centre-learnt/--no-centre-learnt",
        help="Also search the photo sets one after another (seeded order), each photo with the centre "
             "learnt from the photos before it, as a serving shop learns it (sets shopper_photos_learnt, "
             "shopper_like_photos_learnt). Default: on when SNAPSHOP_SEARCH__SHOPPER_CENTRE is auto, its default.")] = None,
    model: ModelOpt = None,
) -> None:
    """Recall@1/5/10, MRR and nDCG@10 per query set and per signal (image, text, BM25, fused)."""
    from engine.model_loading import load_encoder
    from eval.harness import format_table, run_eval, write_outputs

    settings = build_settings(model=model)
    encoder = load_encoder(settings.model)
    if split not in ("all", "train", "validation"):
        fail(f"--split must be all, train or validation, not '{split}'")
    report = run_eval(encoder, catalog, queries, split, limit_products, limit_queries,
                      settings.search, progress=sys.stderr.isatty() or bool(os.environ.get("SNAPSHOP_PROGRESS")),
                      only=set(only.split(",")) if only else None, centre_halves=centre_halves,
                      centre_learnt=settings.search.shopper_centre == "auto" if centre_learnt is None else centre_learnt)
    typer.echo(format_table(report))
    paths = write_outputs(report, out)
    typer.echo(f"wrote {paths['json']} and {paths['plot']}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [SNAPSHOP_API__HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [SNAPSHOP_API__PORT].")] = None,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Serve the HTTP API and the shopper page (API docs at /docs)."""
    from api.app import create_app
    from api.serving import server

    settings = build_settings(store, qdrant_url, model)
    application = create_app(settings)
    server(application, settings.api, host, port).run()


@app.command()
def bench(
    catalog: Annotated[Path, typer.Option(help="Real catalog whose photos and titles seed the benchmark.")],
    sizes: Annotated[str, typer.Option(help="Catalog sizes to load and query, comma-separated.")] = "100000",
    queries: Annotated[int, typer.Option(help="Queries per kind (text, photo, photo+text) and filter mode.")] = 200,
    source_products: Annotated[int, typer.Option(help="Real products encoded once and replicated.")] = 8000,
    ingest_products: Annotated[int, typer.Option(help="Real products ingested end to end.")] = 512,
    quality_products: Annotated[int, typer.Option(help="Held-out products of the precision check.")] = 1000,
    batches: Annotated[str, typer.Option(help="Encoder batch sizes, comma-separated.")] = "1,64",
    precisions: Annotated[str, typer.Option(help="Encoder precisions to compare (fp32, bf16, fp16).")] = "fp32,bf16",
    sections: Annotated[str, typer.Option(help="Which parts: encoder, quality, ingest, scale.")] = "encoder,quality,ingest,scale",
    ef: Annotated[str, typer.Option(help="hnsw_ef values to sweep, comma-separated.")] = "16,32,64,128,256",
    noise: Annotated[Optional[float], typer.Option(
        help="Norm of the noise moving each copied vector; unset: as far as a real nearest neighbour.")] = None,
    min_seconds: Annotated[float, typer.Option(help="Least time spent timing each encoder figure.")] = 2.0,
    work_dir: Annotated[Path, typer.Option(help="Stores and the embeddings cache go here.")] = Path("var/bench"),
    keep_stores: Annotated[bool, typer.Option(help="Keep the benchmark stores instead of deleting them.")] = False,
    reuse_stores: Annotated[bool, typer.Option(
        help="Query a store kept by an earlier run (same size and catalog) instead of loading it again.")] = False,
    warmup: Annotated[int, typer.Option(help="Untimed queries before timing; their latency is the cold start.")] = 100,
    local_features: Annotated[bool, typer.Option(
        help="Store the photos' local features (the match signal) with the synthetic products.")] = True,
    out: Annotated[Path, typer.Option(help="Folder for bench.json.")] = Path("var/bench"),
    model: ModelOpt = None,
) -> None:
    """Speed and scale: encoder throughput, ingest, query latency and recall at 100k-1M products."""
    from eval.bench import SECTIONS, BenchConfig, format_table, run_bench, write_report

    def numbers(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
        except ValueError:
            values = ()
        if not values or min(values) < 1:
            fail(f"expected comma-separated positive whole numbers, got '{text}'")
        return values

    settings = build_settings(model=model)
    chosen = tuple(s.strip() for s in sections.split(",") if s.strip())
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        fail(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    config = BenchConfig(
        catalog=catalog, sizes=numbers(sizes), queries=queries, source_products=source_products,
        ingest_products=ingest_products, quality_products=quality_products, batches=numbers(batches),
        precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()), sections=chosen,
        ef_sweep=numbers(ef), noise=noise, min_seconds=min_seconds, work_dir=work_dir, keep_stores=keep_stores,
        reuse_stores=reuse_stores, warmup=warmup, local_features=local_features,
        cached_repeats=min(50, queries),
    )
    report = run_bench(settings, config, say=lambda message: typer.echo(f"bench: {message}", err=True))
    typer.echo(format_table(report))
    typer.echo(f"wrote {write_report(report, out)}")


# The production commands (report, tune, reindex, backup, restore) live in their own module.
from snapshop.ops import register  # noqa: E402

register(app)
