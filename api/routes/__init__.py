"""Every router of the API, combined in one place."""

from fastapi import APIRouter

from api.routes import health, images, pages, products, search

router = APIRouter()
for module in (health, search, products, images, pages):
    router.include_router(module.router)
