"""The signal registry: one entry per signal, the rest derived; the search plan; leaves stay leaves."""

import os
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from engine.images import load_image_file
from engine.ranking import bounded
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, SearchSettings, Settings, StoreSettings
from engine.signals import SIGNALS, RankerWeights, Signal
from engine.store import open_store
from engine.store.base import CAPTION_VECTOR, SENTENCE_VECTOR
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import FASHION, REPO


def year_evidence(signal, candidates):
    """Newer products count more (the catalog's years run from 2007 to 2018)."""
    years = [(p.get("fields") or {}).get("year") for p in candidates.payloads]
    return np.array([bounded(min(max((float(y) - 2000) / 20, 0.0), 1.0)) if y else np.nan for y in years])


NEWNESS = Signal("newness", 2.0, 20, "new", "how recent the product is (the catalog's year)", year_evidence,
                 fields=("fields.year",))


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, small_rows, encoder):
    from tests.conftest import write_catalog

    folder = tmp_path_factory.mktemp("signals")
    path = write_catalog(small_rows, folder)
    with open_store(StoreSettings(path=folder / "store"), encoder.info) as store:
        ingest_catalog(read_catalog(path), encoder, store, IngestSettings(), progress=False)
        yield Searcher(encoder, store, signals=SIGNALS.with_signal(NEWNESS)), small_rows


def test_a_registered_signal_is_ranked_and_explained(searcher):
    searcher, rows = searcher
    alone = {name: 0.0 for name in searcher.signals.names} | {"newness": 1.0}
    results = searcher.search(SearchQuery(text="shirt", k=10, weights=alone)).results
    years = [int(r.payload["fields"]["year"]) for r in results]
    assert years == sorted(years, reverse=True) and years[0] > years[-1]
    assert all(r.explanation == {"newness": 1.0} for r in results)

    mixed = searcher.search(SearchQuery(text="shirt", k=10)).results
    assert all({"image", "newness"} <= set(r.explanation) for r in mixed)
    assert list(mixed[0].explanation)[-1] == "newness"  # explanation order is the registry's
    assert "newness" in searcher.weights.model_dump() and searcher.weights.newness == 2.0


def test_the_plan_says_which_searches_gather_and_which_only_score(searcher):
    searcher, rows = searcher
    words = searcher.plan(searcher.prepare(SearchQuery(text="black watch", k=10)))
    assert {q.using for q in words.gather} >= {"image", SENTENCE_VECTOR, "bm25"}
    assert words.score_only == ("caption",) and words.limit == 40
    assert next(q for q in words.gather if q.using == "image").breadth == 4  # cross-modal: searched wider

    photo = load_image_file(FASHION / rows.iloc[0]["image"])
    both = searcher.plan(searcher.prepare(SearchQuery(text="in black", image=photo, k=20)))
    assert set(both.score_only) == {"caption", "text"} and both.limit == 80  # beside a photo, words only score
    alone = searcher.plan(searcher.prepare(SearchQuery(image=photo, k=10)))
    assert {q.using for q in alone.gather} == {"image", "look"} and "bm25" not in alone.signals
    assert next(q for q in alone.gather if q.using == "image").breadth == 1

    off = searcher.plan(searcher.prepare(SearchQuery(text="black watch", weights={"text": 0, "caption": 0})))
    assert "text" not in off.signals and "caption" not in off.score


def test_the_registry_derives_weights_and_score_only_vectors():
    assert tuple(RankerWeights.model_fields) == SIGNALS.names
    assert RankerWeights().look == SIGNALS["look"].default
    assert SIGNALS.score_only_vectors == (CAPTION_VECTOR,)  # the joint-space titles get no HNSW graph
    with pytest.raises(ValidationError):
        RankerWeights(imagee=1.0)
    with pytest.raises(ValidationError):
        RankerWeights(look=SIGNALS["look"].maximum + 1)


def test_a_misspelt_weight_in_settings_fails_at_start_naming_the_known_ones(monkeypatch):
    monkeypatch.setenv("SNAPSHOP_SEARCH__WEIGHTS", '{"imagee": 1}')
    with pytest.raises(ValidationError, match="unknown ranker weight.*imagee; known: image, look, caption"):
        Settings()
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        SearchSettings(weights={"image": 11})
    out = subprocess.run([sys.executable, "-m", "snapshop", "search", "--text", "watch"], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SNAPSHOP_SEARCH__WEIGHTS": '{"imagee": 1}', "PYTHONPATH": str(REPO)})
    assert out.returncode == 2
    assert "unknown ranker weight(s): imagee; known: image, look, caption, text" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_store_loads_without_the_model():
    probe = "import sys, engine.store, engine.store.edge, engine.signals; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
