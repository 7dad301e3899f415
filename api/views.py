"""Stored products and search results as the API shows them: no bookkeeping, photos as URLs."""

from __future__ import annotations

from fastapi import Request

from api.ids import id_segment
from api.schemas import Product, SearchHit, Variant
from engine.products import ProductPayload, payload_of
from engine.search import SearchResult
from engine.stock import in_stock
from engine.variants import variant_label

REMOTE_PREFIXES = ("http://", "https://")


def image_urls(request: Request, product: ProductPayload) -> list[str]:
    """The shop's own image URLs as they are; local photos as this app's ``/images/{id}/{n}``."""
    urls = []
    for n, source in enumerate(product.photo_sources):
        if str(source).startswith(REMOTE_PREFIXES):
            urls.append(str(source))
        elif source:  # '' marks a photo the ingest refused to read: nothing to show
            urls.append(str(request.url_for("product_image", product_id=id_segment(product.product_id), n=n)))
    return urls


def to_hit(result: SearchResult, request: Request, attributes=()) -> SearchHit:
    return SearchHit(
        id=result.product_id, title=result.title, price=result.price, category=result.category,
        images=image_urls(request, payload_of(result.payload, result.product_id)), score=result.score,
        signals=result.signals, explanation=result.explanation, in_stock=in_stock(result.payload),
        attributes=attributes_of(result.payload, attributes),
        rules=result.rules, variants=[to_variant(v["product_id"], v["payload"], request) for v in result.variants],
    )


def to_variant(product_id: str, payload: dict, request: Request) -> Variant:
    images = image_urls(request, payload_of(payload, product_id))
    return Variant(id=product_id, label=variant_label(payload) or payload.get("title", ""),
                   image=images[0] if images else None, price=payload.get("price"), in_stock=in_stock(payload))


def attributes_of(payload: dict, names) -> dict:
    fields = payload.get("fields") or {}
    return {name: fields[name] for name in names if fields.get(name) is not None}


def to_product(product: ProductPayload, request: Request) -> Product:
    return Product(
        id=product.product_id, title=product.title, price=product.price, category=product.category,
        images=image_urls(request, product), fields=product.fields,
    )
