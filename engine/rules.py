"""Merchandising rules and synonyms: what a merchandiser changes about results, kept with the products.

A rule applies to a query (its words, case and spacing aside), to a category (the filter, or the
category the query predicts), or to every search when it names neither. Actions:

- ``pin`` a product at a position (1 = first) of the list;
- ``hide`` a product, or every product matching a condition;
- ``boost`` / ``bury`` the products matching a condition by ``amount`` of fused score (0..1), so
  they rise above (or fall below) products that were that much more relevant.

A condition is one attribute and value (``brand`` = "Nike"), ``in_stock`` (true/false) or
``newer_than`` (a year or date, read as the ``newest`` sort reads it). Synonyms ("sneakers =
trainers") widen the words of a query for the keyword (BM25) and sentence signals.

The store keeps the rules document next to the products (``VectorStore.read_rules``), so they
survive restarts and travel with backups of the store.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from engine.sorting import field_of, newest_of
from engine.stock import in_stock

MAX_RULES = 1000
MAX_SYNONYMS = 1000


class Rule(BaseModel):
    """One merchandising rule."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], description="Set by the store.")
    action: Literal["pin", "hide", "boost", "bury"]
    query: str | None = Field(None, max_length=200, description="Applies to this query (words, any case).")
    category: str | None = Field(None, max_length=200, description="Applies to searches in this category.")
    product_id: str | None = Field(None, max_length=200, description="The product pinned or hidden.")
    position: int | None = Field(None, ge=1, le=1000, description="Where a pinned product goes (1 = first).")
    attribute: str | None = Field(None, max_length=100, description="Condition: an attribute (or in_stock, "
                                  "newer_than) ...")
    value: str | float | bool | None = Field(None, description="... and its value.")
    amount: float = Field(0.2, gt=0, le=1, description="Fused score added (boost) or taken (bury).")

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if self.action == "pin" and (self.product_id is None or self.position is None):
            raise ValueError("a pin needs product_id and position")
        if self.action in ("boost", "bury") and self.attribute is None:
            raise ValueError(f"a {self.action} needs an attribute and value (e.g. brand = Nike, in_stock = true)")
        if self.action == "hide" and self.product_id is None and self.attribute is None:
            raise ValueError("a hide needs a product_id, or an attribute and value")
        if self.attribute is not None and self.value is None:
            raise ValueError(f"attribute '{self.attribute}' needs a value")
        return self

    def applies(self, text: str | None, categories: set[str]) -> bool:
        """Whether this rule applies to a search with ``text`` in ``categories``."""
        if self.query is not None and normalise(self.query) != normalise(text or ""):
            return False
        return self.category is None or self.category in categories

    def matches(self, product_id: str, payload: dict) -> bool:
        """Whether a product is one this rule acts on."""
        if self.product_id is not None and self.attribute is None:
            return product_id == self.product_id
        if self.attribute == "in_stock":
            return in_stock(payload) == _truth(self.value)
        if self.attribute == "newer_than":
            newest, limit = newest_of(payload), newest_of({"date": self.value})
            return newest is not None and limit is not None and newest > limit
        value = field_of(payload, self.attribute)
        values = value if isinstance(value, list) else [value]
        return any(v is not None and str(v).lower() == str(self.value).lower() for v in values)

    def describe(self) -> str:
        """How the rule reads in a result's explanation."""
        what = (f"{self.attribute} = {self.value}" if self.attribute else f"product {self.product_id}")
        where = " and ".join(part for part in (f"query '{self.query}'" if self.query else "",
                                               f"category {self.category}" if self.category else "") if part)
        action = f"pinned at {self.position}" if self.action == "pin" else (
            f"{self.action}ed by {self.amount:g}" if self.action in ("boost", "bury") else "hidden")
        return f"{action} ({what}{', for ' + where if where else ''})".replace("buryed", "buried")


class Synonym(BaseModel):
    """Words a shopper may use for the same thing: "sneakers = trainers = running shoes"."""

    words: list[str] = Field(min_length=2, max_length=20, description="Each a word or phrase.")

    @model_validator(mode="after")
    def _clean(self) -> Synonym:
        self.words = list(dict.fromkeys(normalise(w) for w in self.words if normalise(w)))
        if len(self.words) < 2:
            raise ValueError("a synonym needs two different words or phrases")
        return self


class Merchandising(BaseModel):
    """The rules document a store keeps."""

    rules: list[Rule] = Field([], max_length=MAX_RULES)
    synonyms: list[Synonym] = Field([], max_length=MAX_SYNONYMS)


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def expand(text: str, synonyms: list[Synonym]) -> str:
    """``text`` with the other words of every synonym one of its phrases belongs to appended, so
    "white sneakers" also matches titles that say "trainers"."""
    words = f" {normalise(text)} "
    extra = []
    for synonym in synonyms:
        if any(f" {phrase} " in words for phrase in synonym.words):
            extra += [phrase for phrase in synonym.words if f" {phrase} " not in words]
    return f"{text} {' '.join(extra)}" if extra else text


def _truth(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def rule_fields(rules: list[Rule]) -> set[str]:
    """The payload fields the rules' conditions read (besides stock and dates, which ranking reads)."""
    return {rule.attribute for rule in rules if rule.attribute and rule.attribute not in ("in_stock", "newer_than")}


def adjust(keys: list, records: list, fused: np.ndarray, rules: list[Rule]) -> tuple[list[int], np.ndarray, dict]:
    """Hide, boost and bury: the positions kept, the fused scores moved, and per position the
    rules that moved it (described)."""
    acting = [rule for rule in rules if rule.action != "pin"]
    adjusted = np.array(fused, dtype=np.float64)
    kept, notes = [], {}
    for i, record in enumerate(records):
        hidden = False
        for rule in acting:
            if not rule.matches(record.product_id, record.payload):
                continue
            if rule.action == "hide":
                hidden = True
                break
            adjusted[i] += rule.amount if rule.action == "boost" else -rule.amount
            notes.setdefault(i, []).append(rule.describe())
        if not hidden:
            kept.append(i)
    return kept, adjusted, notes


def pin(arranged: list[int], ranked, rules: list[Rule]) -> list[int]:
    """``arranged`` (positions of ``ranked``, in the list's order) with each pinned product moved to
    its position; a pinned product the search did not find (or a filter left out) is not added."""
    pins = sorted((rule for rule in rules if rule.action == "pin"), key=lambda rule: rule.position)
    if not pins:
        return arranged
    at = {ranked.records[ranked.keys[i]].product_id: i for i in arranged}
    out = list(arranged)
    for rule in pins:
        position = at.get(rule.product_id)
        if position is None:
            continue
        out.remove(position)
        out.insert(min(rule.position - 1, len(out)), position)
        ranked.notes.setdefault(ranked.keys[position], []).append(rule.describe())
    return out
