"""Merchandising rules and synonyms (key required): kept with the products, applied to every search.

``POST /search`` takes a ``merchandising`` document too, to preview rules before they are saved.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import RequireApiKey, RuntimeDep
from api.schemas import error_responses
from engine.errors import InvalidQuery, RuleNotFound
from engine.rules import Merchandising, Rule

router = APIRouter(tags=["merchandising"], dependencies=[RequireApiKey])
ERRORS = error_responses(401, 403, 422)


@router.get("/merchandising", summary="The rules and synonyms", responses=error_responses(401, 403))
async def get_merchandising(runtime: RuntimeDep) -> Merchandising:
    return runtime.searcher.merchandising


@router.put("/merchandising", summary="Replace the rules and synonyms", responses=ERRORS)
async def put_merchandising(document: Merchandising, runtime: RuntimeDep) -> Merchandising:
    await runtime.write(runtime.searcher.set_merchandising, document)
    return document


@router.post("/rules", summary="Add a rule (pin, hide, boost, bury)", status_code=status.HTTP_201_CREATED,
             responses=ERRORS)
async def add_rule(rule: Rule, runtime: RuntimeDep) -> Rule:
    async with runtime.write_lock:
        current = runtime.searcher.merchandising
        if any(existing.id == rule.id for existing in current.rules):
            raise InvalidQuery(f"a rule with id '{rule.id}' exists; delete it first, or leave the id out")
        document = current.model_copy(update={"rules": [*current.rules, rule]})
        await runtime.run(runtime.searcher.set_merchandising, Merchandising.model_validate(document.model_dump()))
    return rule


@router.delete("/rules/{rule_id}", summary="Delete a rule", status_code=status.HTTP_204_NO_CONTENT,
               responses=error_responses(401, 403, 404))
async def delete_rule(rule_id: str, runtime: RuntimeDep) -> Response:
    async with runtime.write_lock:
        current = runtime.searcher.merchandising
        kept = [rule for rule in current.rules if rule.id != rule_id]
        if len(kept) == len(current.rules):
            raise RuleNotFound(f"no rule with id '{rule_id}'")
        await runtime.run(runtime.searcher.set_merchandising, current.model_copy(update={"rules": kept}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
