"""The query log: what shoppers searched, what they were shown, and what they did with it.

One SQLite file (``analytics.path``), written from many threads through one connection under a
lock. A search is logged with its text and filters, a photo as its SHA-256 and its joint-space
embedding (never the photo itself), the ids shown, each shown product's ranker evidence (so the
ranker's weights can be refitted to clicks offline), whether it found nothing close, and its
latency. Events (click, add to cart, purchase) name a logged search and one of its results.
Rows older than ``retention_days`` are deleted when the log opens and every hour after.

A photo searched whole also leaves its appearance vector and the model that made it: the shop's
shopper-photo centre is learnt from them (engine.analytics.centre). Only the newest
``LEARN_FROM`` of them are kept (5 KB each with the offline model's 1,280 numbers: 5 MB); older
searches keep their row without it. A log written before these two columns opens as it is, the
columns added, its old rows without them.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import numpy as np

from engine.errors import InvalidQuery, UnknownQuery
from engine.shopper_centre import LEARN_FROM

EventKind = Literal["click", "add_to_cart", "purchase"]
EVENT_KINDS: tuple[EventKind, ...] = ("click", "add_to_cart", "purchase")
PURGE_EVERY_S = 3600.0
DAY_S = 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id TEXT PRIMARY KEY, at REAL NOT NULL, session TEXT, kind TEXT NOT NULL, text TEXT, filters TEXT NOT NULL,
    photo_sha256 TEXT, photo_vector BLOB, results TEXT NOT NULL, evidence TEXT NOT NULL,
    nothing_close INTEGER NOT NULL, latency_ms REAL NOT NULL, photo_look BLOB, model TEXT
);
CREATE INDEX IF NOT EXISTS queries_at ON queries (at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, query_id TEXT NOT NULL, product_id TEXT NOT NULL,
    kind TEXT NOT NULL, position INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_query ON events (query_id);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
"""
# Columns added since the first log: (name, type), added to an older log when it opens.
_ADDED_COLUMNS = (("photo_look", "BLOB"), ("model", "TEXT"))
_QUERY_COLUMNS = ("id, at, session, kind, text, filters, photo_sha256, photo_vector, results, evidence, "
                  "nothing_close, latency_ms, photo_look, model")
# The searches that kept an appearance vector, newest first: what a centre is learnt from and
# what the cap on them walks, without reading the rest of the log.
_LOOKS_INDEX = "CREATE INDEX IF NOT EXISTS queries_looks ON queries (at) WHERE photo_look IS NOT NULL"


@dataclass
class LoggedQuery:
    """One search as the log keeps it. ``evidence`` has one dict per result: signal name to its
    evidence (standard deviations above the query's background), signals that did not apply left out."""

    kind: str  # text, photo or photo+text
    text: str | None
    filters: dict
    results: list[str]
    evidence: list[dict[str, float]]
    nothing_close: bool
    latency_ms: float
    photo_sha256: str | None = None
    photo_vector: np.ndarray | None = None
    # The photo's appearance vector as encoded (before any shopper-photo centre), when it was
    # searched whole, and the model (ModelInfo.tag) that made both vectors.
    photo_look: np.ndarray | None = None
    model: str | None = None
    session: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)


@dataclass
class Event:
    query_id: str
    product_id: str
    kind: EventKind
    position: int  # 1-based rank of the product in the search's results
    at: float = field(default_factory=time.time)


def _blob(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, np.float32).tobytes()


def _array(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, np.float32)


def evidence_rows(matrix: np.ndarray | None, signals: tuple[str, ...]) -> list[dict[str, float]]:
    """The ranker's evidence matrix (results x signals, NaN where one does not apply) as the log keeps it."""
    if matrix is None:
        return []
    return [{name: round(float(v), 4) for name, v in zip(signals, row) if not math.isnan(v)} for row in matrix]


class QueryLog:
    """The query and event log in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path, retention_days: float = 90.0):
        self.path = Path(path)
        self.retention_s = retention_days * DAY_S
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # WAL: a report reading the log does not block the searches writing to it.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()
        self._db.execute(_LOOKS_INDEX)
        self._purged_at = 0.0
        self.purge()

    # --- writes -----------------------------------------------------------------------------
    def _add_missing_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(queries)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE queries ADD COLUMN {name} {kind}")

    def record_query(self, query: LoggedQuery) -> None:
        row = (query.id, query.at, query.session, query.kind, query.text, json.dumps(query.filters, sort_keys=True),
               query.photo_sha256, _blob(query.photo_vector), json.dumps(query.results), json.dumps(query.evidence),
               int(query.nothing_close), query.latency_ms, _blob(query.photo_look), query.model)
        with self._lock:
            self._db.execute(f"INSERT INTO queries ({_QUERY_COLUMNS}) VALUES ({','.join('?' * len(row))})", row)
        self._purge_now_and_then()

    def record_event(self, query_id: str, product_id: str, kind: EventKind, at: float | None = None) -> Event:
        """Log a shopper's action on one result of a logged search; its position is the log's own."""
        if kind not in EVENT_KINDS:
            raise InvalidQuery(f"unknown event kind '{kind}'; known: {', '.join(EVENT_KINDS)}")
        with self._lock:
            found = self._db.execute("SELECT results FROM queries WHERE id = ?", (query_id,)).fetchone()
        if found is None:
            raise UnknownQuery(f"no logged search with query_id '{query_id}' (unknown, or older than the "
                               "retention period)")
        results = json.loads(found[0])
        if product_id not in results:
            raise InvalidQuery(f"product '{product_id}' was not among the results of search '{query_id}'")
        event = Event(query_id, product_id, kind, results.index(product_id) + 1, at or time.time())
        with self._lock:
            self._db.execute("INSERT INTO events (at, query_id, product_id, kind, position) VALUES (?,?,?,?,?)",
                             (event.at, event.query_id, event.product_id, event.kind, event.position))
        return event

    def purge(self, now: float | None = None) -> int:
        """Delete searches and events older than the retention period; returns the searches deleted."""
        cutoff = (now or time.time()) - self.retention_s
        with self._lock:
            self._db.execute("DELETE FROM events WHERE at < ?", (cutoff,))
            deleted = self._db.execute("DELETE FROM queries WHERE at < ?", (cutoff,)).rowcount
            # Appearance vectors beyond the newest LEARN_FROM: no centre reads them any more.
            self._db.execute("UPDATE queries SET photo_look = NULL WHERE photo_look IS NOT NULL AND at < "
                             "(SELECT at FROM queries WHERE photo_look IS NOT NULL ORDER BY at DESC LIMIT 1 OFFSET ?)",
                             (LEARN_FROM - 1,))
            self._purged_at = time.monotonic()
        return deleted

    def _purge_now_and_then(self) -> None:
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            self.purge()

    # --- reads ------------------------------------------------------------------------------
    def queries(self, since: float = 0.0) -> Iterator[LoggedQuery]:
        """Logged searches from ``since`` (a UNIX time) on, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_QUERY_COLUMNS} FROM queries WHERE at >= ? ORDER BY at",
                                    (since,)).fetchall()
        for (qid, at, session, kind, text, filters, sha, vector, results, evidence, nothing_close,
             latency, look, model) in rows:
            yield LoggedQuery(kind=kind, text=text, filters=json.loads(filters), results=json.loads(results),
                              evidence=json.loads(evidence), nothing_close=bool(nothing_close), latency_ms=latency,
                              photo_sha256=sha, session=session, id=qid, at=at, photo_vector=_array(vector),
                              photo_look=_array(look), model=model)

    def photo_looks(self, since: float = 0.0, limit: int = LEARN_FROM) -> list[tuple[str | None, np.ndarray]]:
        """(model, appearance vector) of the photos of the newest ``limit`` searches that kept one
        from ``since`` on, newest first, each photo once: a photo searched again (its next page,
        words added) counts once. At most ``limit`` vectors are read, however busy the shop."""
        with self._lock:
            rows = self._db.execute("SELECT photo_sha256, model, photo_look FROM queries WHERE photo_look IS NOT NULL "
                                    "AND at >= ? ORDER BY at DESC LIMIT ?", (since, limit)).fetchall()
        # Kept apart in Python: SQLite's GROUP BY copied the 5 KB vectors into a sorter (125 ms for
        # 1,000, against 20 ms for this read, on the loaded 2-core machine).
        looks, seen = [], set()
        for sha, model, look in rows:
            if sha not in seen:
                seen.add(sha)
                looks.append((model, np.frombuffer(look, np.float32)))
        return looks

    def events(self, since: float = 0.0) -> list[Event]:
        """Logged events from ``since`` on, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT at, query_id, product_id, kind, position FROM events WHERE at >= ? "
                                    "ORDER BY at", (since,)).fetchall()
        return [Event(query_id, product_id, kind, position, at) for at, query_id, product_id, kind, position in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
