"""Request and response models of the HTTP API.

Requests, stored products and public answers are kept apart: the store's payload carries
bookkeeping (hashes, local paths) that never leaves the app; answers carry image URLs instead.
Lists are wrapped as ``{data, count}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Json,
    JsonValue,
    model_validator,
)

from engine.records import (
    MAX_CATEGORY_CHARS,
    MAX_PRICE,
    MAX_STOCK,
    check_category,
    check_json_value,
    check_price,
    check_stock,
    check_text,
)
from engine.rules import Merchandising
from engine.signals import SIGNALS
from engine.sorting import Sort
from engine.store import SearchFilters

Price = Field(None, ge=0, allow_inf_nan=False)


# --- health -----------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    products: int = Field(description="Products in the store.")
    model: str = Field(description="The model (and version) whose vectors the store holds.")
    store: Literal["edge", "server"]


# --- search -----------------------------------------------------------------------------------
class SearchForm(BaseModel):
    """A shopper's query; the photo travels beside it as a file part of the same form."""

    text: str | None = Field(None, max_length=1000, description="What the shopper typed.")
    category: list[str] = Field([], max_length=100, description="Only these categories (repeat the field).")
    min_price: float | None = Price
    max_price: float | None = Price
    k: int | None = Field(None, ge=1, le=10_000, description="How many products; the settings' default if unset.")
    photo_text_mix: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="The text's share in a photo+text query.")
    weights: Json[dict[str, Annotated[float, Field(allow_inf_nan=False)]]] | None = Field(
        None, description=f"Ranker weight overrides as a JSON object, e.g. {{\"image\": 1, \"bm25\": 0}}; "
                          f"names and bounds: {SIGNALS.help_text()}.")
    history: list[str] = Field([], max_length=50, description="Product ids the shopper viewed or bought.")
    price_target: float | None = Field(None, gt=0, allow_inf_nan=False, description="A price the shopper aims at.")
    session: str | None = Field(None, max_length=64, description="An opaque id of the shopper's visit, for the "
                                "query log (search analytics); never a person's identity.")
    sort: Sort = Field(Sort.relevance, description="Order of the list: relevance, or the products above the "
                       "relevance floor by price (price_asc, price_desc), newest first, or most popular first.")
    offset: int | None = Field(
        None, ge=0, le=10_000, description="Skip this many products: pages of k. Give 0 for the first page of a "
        "paged list; every page (also sorted) is cut from one ranked list of the settings' depth.")
    floor: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False,
        description="Relevance floor of a sorted list and of the facets (0..1 fused score); unset: the "
                    "settings' relevance_floor.")
    attributes: Json[dict[str, JsonValue]] | None = Field(
        None, description='Attribute filters as a JSON object: any of these values for a keyword attribute, a '
                          'range for a number, e.g. {"colour": ["Black", "Navy Blue"], "year": {"min": 2015}}; '
                          'GET /facets lists the attributes.')
    facets: bool = Field(False, description="Also count the attributes of the products that match the search "
                                            "(those above the relevance floor).")
    out_of_stock: Literal["hide", "demote", "show"] | None = Field(
        None, description="Products out of stock: hidden, demoted after those in stock, or shown as ranked; "
                          "unset: the settings' out_of_stock.")
    ungrouped: bool = Field(False, description="Every variant as a result of its own, instead of one result per "
                                               "family (item_group_id / parent_id) with its variants listed.")
    image_url: str | None = Field(
        None, max_length=2000, description="Search by the photo at this http(s) URL instead of an upload "
                                           "(fetched through the same address guard and limits as catalog photos).")
    merchandising: Json[Merchandising] | None = Field(
        None, description="Rules and synonyms to preview instead of the stored ones (GET /merchandising's "
                          "document as JSON); nothing is saved.")
    crop: str | None = Field(None, max_length=200, description="Search only this box of the photo: x,y,w,h as "
                             "fractions of its width and height, e.g. 0.25,0.1,0.5,0.6. Unset: the whole photo "
                             "and centred crops of it.")


class FilterParams(BaseModel):
    """Category, price and attribute filters given in the query string."""

    category: list[str] = Field([], max_length=100, description="Only these categories (repeatable).")
    min_price: float | None = Field(None, ge=0, allow_inf_nan=False)
    max_price: float | None = Field(None, ge=0, allow_inf_nan=False)
    attributes: Json[dict[str, JsonValue]] | None = Field(
        None, description='Attribute filters as a JSON object, e.g. {"colour": ["Black"], "year": {"min": 2015}}.')

    def filters(self) -> SearchFilters:
        """Category and price filters (attributes are checked against the store by the searcher);
        raises InvalidQuery for an inverted price range."""
        return SearchFilters(tuple(self.category), self.min_price, self.max_price)


class SimilarParams(FilterParams):
    k: int = Field(12, ge=1, le=10_000, description="How many products.")
    negative: list[str] = Field([], max_length=20, description="Ids of products to steer away from (repeatable).")


class CategoryCount(BaseModel):
    name: str
    count: int


class ValueCount(BaseModel):
    value: str
    count: int


class AttributeFacet(BaseModel):
    name: str
    values: list[ValueCount] = Field(description="Most frequent first.")


class QueryFacets(BaseModel):
    """Counts over the products that match the search: its ranked products above the relevance floor."""

    total: int
    categories: list[CategoryCount]
    attributes: list[AttributeFacet]


class Variant(BaseModel):
    id: str
    label: str = Field(description="What tells it from its family's others: colour, size...")
    image: str | None = Field(description="Its first photo's URL.")
    price: float | None
    in_stock: bool


class SearchHit(BaseModel):
    id: str
    title: str
    price: float | None
    category: str | None
    images: list[str] = Field(description="Photo URLs: served by this app, or the shop's own URLs.")
    score: float
    signals: dict[str, float] = Field(description="Each signal's calibrated value, 0..1.")
    explanation: dict[str, float] = Field(description="Each signal's share of the score.")
    in_stock: bool = Field(True, description="False when the catalog or a PATCH says it is out of stock.")
    attributes: dict[str, JsonValue] = Field({}, description="The product's filterable attributes.")
    rules: list[str] = Field([], description="The merchandising rules that moved this product, described.")
    variants: list[Variant] = Field([], description="Its family's variants (same item_group_id or parent_id), "
                                    "itself included, for swatches; empty for a product on its own.")


class SearchResults(BaseModel):
    data: list[SearchHit]
    count: int
    nothing_close: bool = Field(description="True when no result looks like a match (they are only the nearest).")
    predicted_category: str | None = None
    query_id: str | None = Field(None, description="This search in the query log, for POST /events; null when "
                                 "search analytics are off.")
    total: int = Field(0, description="Products in the list the pages are cut from (sorted: those above the floor).")
    offset: int = Field(0, description="Position of this page's first product in that list.")
    next_offset: int | None = Field(None, description="The offset of the next page; null on the last one.")
    facets: QueryFacets | None = Field(None, description="With facets=true: counts that follow the query.")
    region: list[float] | None = Field(None, description="The box of the photo searched (x,y,w,h fractions).")


class SimilarResults(BaseModel):
    data: list[SearchHit]
    count: int


class SignalControl(BaseModel):
    """One ranking signal as the merchandiser page draws it (engine.signals)."""

    name: str
    label: str
    help: str
    maximum: float


class SearchDefaults(BaseModel):
    """What the shopper page needs to draw its controls."""

    weights: dict[str, float]
    signals: list[SignalControl] = Field(description="The ranker's signals in explanation order.")
    photo_text_mix: float
    default_k: int
    max_k: int
    max_upload_bytes: int
    relevance_floor: float
    depth: int


class PriceBucket(BaseModel):
    min: float
    max: float
    count: int


class Facets(BaseModel):
    total: int
    categories: list[CategoryCount]
    attributes: list[AttributeFacet] = Field(description="Counts per value of each keyword attribute.")
    numbers: list[str] = Field(description="The number attributes (filtered by range).")
    price_histogram: list[PriceBucket]


# --- products ---------------------------------------------------------------------------------
class Product(BaseModel):
    id: str
    title: str
    price: float | None
    category: str | None
    images: list[str]
    fields: dict[str, JsonValue] = Field(description="The catalog's other columns.")


class ProductRecord(BaseModel):
    """One product to add or replace, shaped like a catalog row.

    Nothing here is checked by the schema: each record is checked by ``engine.records`` like a
    catalog row, and one that cannot become a product (no id, no title, no image, a price that is
    not a number, a field nested too deeply) is reported in the answer with its row number and
    reason while the others are stored.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "id": "15970", "title": "Navy Blue Casual Shirt", "image": "images/15970.jpg",
        "price": 1299.0, "category": "Shirts", "colour": "Navy Blue"}]})

    id: JsonValue = Field(None, description="The product's id (text or a number).")
    title: JsonValue = None
    image: JsonValue = Field(None, description="A path under the API's images_root, or an http(s) URL.")
    images: JsonValue = Field(None, description="Several photos of the product.")
    price: JsonValue = Field(None, description=f"A number from 0 to {MAX_PRICE:g}.")
    category: JsonValue = None


class RowProblem(BaseModel):
    row: int = Field(description="Position of the record in the request, from 1.")
    product_id: str | None
    reason: str


class RecordOutcome(BaseModel):
    row: int = Field(description="Position of the record in the request, from 1.")
    product_id: str | None
    outcome: Literal["added", "updated", "payload_only", "unchanged", "skipped"] = Field(
        description="What was stored: 'skipped' records are in problems, with the reason.")


class UpsertSummary(BaseModel):
    """What an upsert did, record by record: each record is applied on its own (not all or nothing)."""

    received: int
    added: int
    updated: int
    payload_only: int = Field(description="Products whose price, category or fields changed (no re-embedding).")
    unchanged: int
    stored: int
    problems: list[RowProblem] = Field(description="Records or photos that were skipped, and why.")
    records: list[RecordOutcome] = Field(description="Each record's outcome, in the request's order.")
    seconds: dict[str, float]


def _json(check: Callable[[Any, str | None], Any]) -> Callable[[Any], Any]:
    """An ``engine.records`` check as a validator of a JSON body's value (its loc names the field)."""
    return lambda value: check(check_json_value(value, None), None)


class ProductPatch(BaseModel):
    """Fields a merchandiser may change without re-embedding the product (checked by ``engine.records``)."""

    model_config = ConfigDict(extra="forbid")

    price: Annotated[float | None, BeforeValidator(_json(check_price))] = Field(None, ge=0, le=MAX_PRICE)
    category: Annotated[str | None, BeforeValidator(_json(check_category))] = Field(
        None, min_length=1, max_length=MAX_CATEGORY_CHARS)
    stock: Annotated[int | None, BeforeValidator(_json(check_stock))] = Field(None, ge=0, le=MAX_STOCK)
    availability: Literal["in_stock", "out_of_stock", "preorder", "backorder"] | None = Field(
        None, description="Merchant Center availability; out_of_stock is out of stock.")

    @model_validator(mode="after")
    def _something_to_change(self) -> ProductPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of price, category, stock, availability")
        return self


class DeleteRequest(BaseModel):
    ids: list[Annotated[str, AfterValidator(check_text)]] = Field(min_length=1, max_length=10_000)


class DeleteResult(BaseModel):
    deleted: list[str]
    not_found: list[str]


# --- errors -----------------------------------------------------------------------------------
class ErrorMessage(BaseModel):
    detail: str = Field(description="What went wrong, exactly.")


class InvalidInput(BaseModel):
    detail: str | list[dict[str, JsonValue]] = Field(
        description="The reason, or (for a request that does not fit the schema) one entry per bad field.")


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for the error statuses a route may answer."""
    descriptions = {
        400: "Bad request.", 401: "No API key given.", 403: "Wrong API key.", 404: "No such product.",
        409: "The store holds another model's vectors.", 413: "The upload is too large.",
        415: "The photo is not an image type.", 422: "The request cannot be answered as asked.",
        429: "Too many requests from this client; retry after the Retry-After header's seconds.",
        503: "The store does not answer.",
    }
    return {code: {"model": InvalidInput if code == 422 else ErrorMessage, "description": descriptions[code]}
            for code in codes}
