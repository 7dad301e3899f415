"""Search by text, by photo, or both; the facets that a shop's filters are drawn from."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from PIL import Image

from api.analytics import learn_from_search, log_search
from api.deps import FiltersQuery, RequireReadAccess, RuntimeDep
from api.runtime import Runtime
from api.schemas import (
    AttributeFacet,
    CategoryCount,
    Facets,
    PriceBucket,
    QueryFacets,
    SearchDefaults,
    SearchForm,
    SearchResults,
    SignalControl,
    ValueCount,
    error_responses,
)
from api.uploads import decode_photo, read_photo
from api.views import to_hit
from engine.errors import InvalidQuery
from engine.fetch import fetch_url
from engine.regions import Region
from engine.search import SearchQuery
from engine.store import SearchFilters

router = APIRouter(tags=["search"], dependencies=[RequireReadAccess])

PhotoFile = Annotated[UploadFile | None, File(description="The shopper's photo (JPEG, PNG, WebP...).")]


@router.post("/search", summary="Search by text, photo, or both",
             responses=error_responses(413, 415, 422))
async def search(request: Request, runtime: RuntimeDep, form: Annotated[SearchForm, Form()],
                 photo: PhotoFile = None) -> SearchResults:
    filters = runtime.searcher.attribute_filters(SearchFilters(tuple(form.category), form.min_price, form.max_price),
                                                 form.attributes)
    crop = Region.parse(form.crop) if form.crop else None
    decode_started = time.perf_counter()
    image, photo_bytes = await _decoded_photo(photo, runtime)
    if form.image_url is not None:
        if image is not None:
            raise InvalidQuery("give a photo or an image_url, not both")
        image, photo_bytes = await _photo_at(form.image_url, runtime)
    decode_seconds = time.perf_counter() - decode_started
    if crop is not None and image is None:
        raise InvalidQuery("crop is a box in the photo: send a photo with it")
    query = SearchQuery(
        text=form.text, image=image, filters=filters, k=form.k or runtime.settings.search.default_k,
        photo_text_mix=form.photo_text_mix, weights=form.weights, price_target=form.price_target,
        history=tuple(form.history), offset=form.offset, sort=form.sort, floor=form.floor, facets=form.facets,
        out_of_stock=form.out_of_stock, ungrouped=form.ungrouped, merchandising=form.merchandising, crop=crop,
    )
    response = await runtime.run(runtime.searcher.search, query)
    seconds = {"decode": decode_seconds, **response.seconds} if image is not None else response.seconds
    kind = query_kind(form.text, image)
    request.app.state.metrics.observe_search(kind, seconds, response.nothing_close)
    query_id = await log_search(runtime, form, kind, photo_bytes, response, seconds) if runtime.query_log else None
    learn_from_search(runtime, photo_bytes, response)
    names = runtime.searcher.attributes()
    hits = [to_hit(result, request, names) for result in response.results]
    end = response.offset + len(hits)
    return SearchResults(data=hits, count=len(hits), nothing_close=response.nothing_close,
                         predicted_category=response.predicted_category, query_id=query_id, total=response.total,
                         offset=response.offset, next_offset=end if end < response.total else None,
                         facets=_query_facets(response.facets) if response.facets is not None else None,
                         region=response.region.as_list() if response.region else None)


def _query_facets(counts: dict) -> QueryFacets:
    return QueryFacets(total=counts["total"], categories=_category_counts(counts["categories"]),
                       attributes=_attribute_facets(counts["attributes"]))


def _category_counts(counts: dict[str, int]) -> list[CategoryCount]:
    return [CategoryCount(name=name, count=count) for name, count in _most_first(counts)]


def _attribute_facets(counts: dict[str, dict[str, int]]) -> list[AttributeFacet]:
    return [AttributeFacet(name=name, values=[ValueCount(value=v, count=c) for v, c in _most_first(values)])
            for name, values in sorted(counts.items())]


def _most_first(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def query_kind(text: str | None, image: Image.Image | None) -> str:
    """'text', 'photo' or 'photo+text': how a search is labelled in metrics and the query log."""
    words = bool((text or "").strip())
    return "photo+text" if image is not None and words else "photo" if image is not None else "text"


async def _photo_at(url: str, runtime: Runtime) -> tuple[Image.Image, bytes]:
    """The photo at a shopper's image URL, fetched through the same guard as catalog URLs
    (public addresses only unless SNAPSHOP_INGEST__ALLOW_PRIVATE_URLS, size and time limits)."""
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidQuery(f"image_url must be an http(s) URL, got '{url[:100]}'")
    ingest, limit = runtime.settings.ingest, runtime.settings.api.max_upload_bytes
    data = await runtime.run(fetch_url, url, timeout_s=ingest.url_timeout_s, max_bytes=limit,
                             allow_private=ingest.allow_private_urls)
    return await runtime.run(decode_photo, data, url, runtime.settings.api, runtime.decode_budget), data


async def _decoded_photo(photo: UploadFile | None, runtime: Runtime) -> tuple[Image.Image | None, bytes | None]:
    if photo is None:
        return None, None
    limit = runtime.settings.api.max_upload_bytes
    data = await read_photo(photo, limit)
    if data is None:
        return None, None
    return await runtime.run(decode_photo, data, photo.filename, runtime.settings.api, runtime.decode_budget), data


@router.get("/search/defaults", summary="Ranker weights and limits the shopper page starts from")
async def search_defaults(runtime: RuntimeDep) -> SearchDefaults:
    settings = runtime.settings
    return SearchDefaults(
        weights=runtime.searcher.weights.model_dump(),
        signals=[SignalControl(name=s.name, label=s.label, help=s.help, maximum=s.maximum)
                 for s in runtime.searcher.signals],
        photo_text_mix=settings.search.photo_text_mix,
        default_k=settings.search.default_k, max_k=settings.search.max_k,
        max_upload_bytes=settings.api.max_upload_bytes, relevance_floor=settings.search.relevance_floor,
        depth=settings.search.depth,
    )


@router.get("/facets", summary="Catalog-wide counts per category and attribute value, and a price histogram",
            responses=error_responses(422))
async def facets(runtime: RuntimeDep, params: FiltersQuery) -> Facets:
    filters = runtime.searcher.attribute_filters(params.filters(), params.attributes)
    counts = await runtime.run(runtime.searcher.facets, filters)
    numbers = [name for name, kind in runtime.searcher.attributes().items() if kind == "number"]
    return Facets(
        total=counts["total"], categories=_category_counts(counts["categories"]),
        attributes=_attribute_facets(counts["attributes"]), numbers=sorted(numbers),
        price_histogram=[PriceBucket(**bucket) for bucket in counts["price_histogram"]],
    )
