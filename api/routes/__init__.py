"""Every router of the API, combined in one place."""

from fastapi import APIRouter

from api.routes import admin, analytics, health, images, metrics, pages, products, rules, search

router = APIRouter()
for module in (health, metrics, search, products, rules, analytics, admin, images, pages):
    router.include_router(module.router)
