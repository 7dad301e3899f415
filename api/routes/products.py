"""Products: read one, find similar ones, and the merchandiser's writes (key required).

Writes reuse the ingest pipeline, so an upsert behaves like ingesting a catalog of those rows:
unchanged products are not re-embedded, bad rows and photos come back with their row numbers.

An upsert is applied record by record, not all or nothing: the answer says what became of each
record. A request cut short (a server stopped midway) keeps the batches it wrote; sending it
again is always safe, as every write is keyed by the product id: the records already stored
come back unchanged and the rest are added. PATCH and DELETE are idempotent too (a repeated
DELETE answers 404, having nothing left to delete).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status

from api.deps import RequireApiKey, RequireReadAccess, RuntimeDep
from api.ids import ProductIdPath
from api.schemas import (
    DeleteRequest,
    DeleteResult,
    Product,
    ProductPatch,
    ProductRecord,
    RecordOutcome,
    RowProblem,
    SimilarParams,
    SimilarResults,
    UpsertSummary,
    error_responses,
)
from api.views import to_hit, to_product
from ingest.catalog import Catalog, catalog_from_records
from ingest.pipeline import IngestSummary, ingest_catalog

router = APIRouter(prefix="/products", tags=["products"])
WRITE_ERRORS = error_responses(401, 403, 422)


@router.get("/{product_id}", summary="One product", responses=error_responses(404),
            dependencies=[RequireReadAccess])
async def get_product(product_id: ProductIdPath, request: Request, runtime: RuntimeDep) -> Product:
    return to_product(await runtime.run(runtime.products.get, product_id), request)


@router.get("/{product_id}/similar", summary="Products that look like this one", dependencies=[RequireReadAccess],
            responses=error_responses(404, 422))
async def similar_products(
    product_id: ProductIdPath, request: Request, runtime: RuntimeDep, params: Annotated[SimilarParams, Query()],
) -> SimilarResults:
    results = await runtime.run(runtime.searcher.similar, product_id, params.k, params.filters(),
                                tuple(params.negative))
    hits = [to_hit(result, request, runtime.searcher.attributes()) for result in results]
    return SimilarResults(data=hits, count=len(hits))


@router.post("", summary="Add or replace products (catalog-like records)", dependencies=[RequireApiKey],
             responses=WRITE_ERRORS,
             description="Each record is applied on its own and reported in `records` (not all or nothing); a "
                         "record that cannot be stored is skipped with its reason in `problems`. Sending the same "
                         "request again is always safe: what was stored comes back unchanged, the rest is added.")
async def upsert_products(
    request: Request, runtime: RuntimeDep, records: Annotated[list[ProductRecord], Body(min_length=1)],
) -> UpsertSummary:
    limit = runtime.settings.api.max_upsert_records
    if len(records) > limit:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{len(records)} records is more than {limit} per request (SNAPSHOP_API__MAX_UPSERT_RECORDS)")
    catalog = catalog_from_records([record.model_dump(exclude_unset=True) for record in records],
                                   runtime.settings.api.images_root)
    metrics = request.app.state.metrics
    with metrics.ingest_running.track_inprogress():
        summary = await runtime.write(ingest_catalog, catalog, runtime.encoder, runtime.store,
                                      runtime.settings.ingest, progress=False, on_batch=metrics.ingest_embedded.inc)
    metrics.observe_ingest({"added": summary.added, "updated": summary.updated, "payload_only": summary.payload_only,
                            "unchanged": summary.unchanged, "skipped": len(summary.skipped_rows)})
    return _upsert_summary(summary, catalog)


def _upsert_summary(summary: IngestSummary, catalog: Catalog) -> UpsertSummary:
    problems = sorted(summary.skipped_rows + summary.bad_images, key=lambda p: p.row)
    outcomes = [RecordOutcome(row=row.row, product_id=row.product_id,
                              outcome=summary.outcomes.get(row.product_id, "skipped")) for row in catalog.rows]
    outcomes += [RecordOutcome(row=error.row, product_id=error.product_id, outcome="skipped")
                 for error in catalog.errors]
    return UpsertSummary(
        received=summary.rows, added=summary.added, updated=summary.updated, payload_only=summary.payload_only,
        unchanged=summary.unchanged, stored=summary.stored,
        problems=[RowProblem(row=p.row, product_id=p.product_id, reason=p.reason) for p in problems],
        records=sorted(outcomes, key=lambda outcome: outcome.row),
        seconds={name: round(value, 3) for name, value in summary.seconds.items()},
    )


@router.patch("/{product_id}", summary="Change price, category, stock or availability without re-embedding",
              dependencies=[RequireApiKey], responses=error_responses(401, 403, 404, 422))
async def update_product(product_id: ProductIdPath, patch: ProductPatch, request: Request, runtime: RuntimeDep) -> Product:
    async with runtime.write_lock:  # read-modify-write of the payload: no other write in between
        product = await runtime.run(runtime.products.patch, product_id, patch.model_dump(exclude_unset=True))
    return to_product(product, request)


@router.delete("/{product_id}", summary="Delete one product", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[RequireApiKey], responses=error_responses(401, 403, 404))
async def delete_product(product_id: ProductIdPath, runtime: RuntimeDep) -> Response:
    async with runtime.write_lock:
        await runtime.run(runtime.products.delete_one, product_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/bulk-delete", summary="Delete several products", dependencies=[RequireApiKey],
             responses=WRITE_ERRORS)
async def delete_products(request: DeleteRequest, runtime: RuntimeDep) -> DeleteResult:
    async with runtime.write_lock:
        deleted, not_found = await runtime.run(runtime.products.delete, request.ids)
    return DeleteResult(deleted=deleted, not_found=not_found)
