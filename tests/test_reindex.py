"""Re-index with other heads while the API answers searches in another thread: no search fails,
and the answers switch from the old index's to the new one's at one moment, never back."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import ingest.reindex as reindex_module
from api.app import create_app
from engine.errors import StoreError
from engine.registry import resolve_model
from engine.settings import ApiSettings, Settings, StoreSettings
from engine.store import open_store
from engine.store.aliases import EdgeAliases
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from ingest.reindex import reindex
from snapshop.cli import app as cli

QUERY = {"text": "black leather handbag", "k": "5"}


@pytest.fixture()
def other_heads(tmp_path):
    """The shipped heads, moved: another model version whose rankings differ."""
    checkpoint = torch.load(resolve_model("snapshop-lit-fashion").weights_path, map_location="cpu",
                            weights_only=False)
    generator = torch.Generator().manual_seed(3)
    for name in ("visual.head.proj.weight", "text.proj.weight"):
        weight = checkpoint["state_dict"][name]
        checkpoint["state_dict"][name] = weight + 0.8 * weight.std() * torch.randn(weight.shape, generator=generator)
    path = tmp_path / "other-heads.pt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture()
def live_store(tmp_path, small_catalog, encoder):
    settings = Settings(store=StoreSettings(path=tmp_path / "store", alias_poll_s=0.05),
                        api=ApiSettings(api_key="reindex-test-key-0d3"))
    with open_store(settings.store, encoder.info) as store:
        ingest_catalog(read_catalog(small_catalog), encoder, store, progress=False)
    return settings


def answer(client) -> tuple[int, tuple]:
    response = client.post("/search", data=QUERY)
    if response.status_code != 200:
        return response.status_code, ()
    return 200, tuple((hit["id"], round(hit["score"], 3)) for hit in response.json()["data"])


def test_reindex_with_other_heads_while_searching_switches_at_one_moment(live_store, small_catalog, other_heads,
                                                                         encoder):
    answers: list[tuple[int, tuple]] = []
    stop = threading.Event()
    with TestClient(create_app(live_store, encoder=encoder)) as client:
        runtime = client.app.state.runtime

        def search_all_the_time():
            while not stop.is_set():
                answers.append(answer(client))

        searcher = threading.Thread(target=search_all_the_time)
        searcher.start()
        try:
            while len(answers) < 5:
                time.sleep(0.05)
            built = CliRunner().invoke(cli, ["reindex", str(small_catalog), "--store", str(live_store.store.path),
                                             "--weights", str(other_heads)])
            assert built.exit_code == 0, built.output
            assert "now serves 'products-" in built.output and "self-recall@10 1.000" in built.output
            deadline = time.monotonic() + 60
            while runtime.collection == "products" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert runtime.collection.startswith("products-")
            seen = len(answers)
            while len(answers) < seen + 5:
                time.sleep(0.05)
        finally:
            stop.set()
            searcher.join()
    assert [status for status, _ in answers] == [200] * len(answers)  # no search failed
    old, new = answers[0][1], answers[-1][1]
    assert old != new
    labels = ["old" if ranked == old else "new" if ranked == new else "other" for _, ranked in answers]
    assert "other" not in labels
    switch = labels.index("new")
    assert labels == ["old"] * switch + ["new"] * (len(labels) - switch)  # one moment, never back

    # After a restart the server serves the new index with the model that made it.
    with TestClient(create_app(live_store)) as restarted:
        assert answer(restarted) == (200, new)
        assert restarted.app.state.runtime.settings.model.weights == other_heads.resolve()


def test_the_old_index_is_kept_until_dropped(live_store, small_catalog, encoder):
    aliases = EdgeAliases(live_store.store.path)
    report = reindex(read_catalog(small_catalog), encoder, live_store)
    assert aliases.collections() == sorted(["products", report.collection])
    with pytest.raises(StoreError, match="is the live index of 'products'"):
        aliases.drop(report.collection)
    dropped = CliRunner().invoke(cli, ["reindex", "--drop-previous", "--store", str(live_store.store.path)])
    assert dropped.exit_code == 0, dropped.output
    assert aliases.collections() == [report.collection]


def test_a_new_index_that_fails_its_check_is_not_switched_to(live_store, small_catalog, encoder, monkeypatch):
    monkeypatch.setattr(reindex_module, "MIN_SELF_RECALL", 1.01)  # no index can pass this
    with pytest.raises(StoreError, match=r"failed its check \(36 products of 36 expected, self-recall@10 1.000"):
        reindex(read_catalog(small_catalog), encoder, live_store)
    assert EdgeAliases(live_store.store.path).entry("products") is None
    with open_store(live_store.store, encoder.info) as store:  # the live index answers as before
        assert store.count() == 36


@pytest.mark.parametrize("centre", ["auto", "off"])
def test_a_write_that_waited_through_a_switch_is_refused_not_written_to_the_old_index(live_store, encoder, tmp_path,
                                                                                      centre):
    """A merchandiser's write queued while the server switched index must not land in the index
    just retired (it would be lost to shoppers): it is refused, to be sent again."""
    import anyio

    from engine.errors import StoreUnavailable
    from engine.settings import SearchSettings

    settings = live_store.model_copy(update={"search": SearchSettings(shopper_centre=centre)})
    with TestClient(create_app(settings, encoder=encoder)) as client:
        runtime = client.app.state.runtime
        old_store = runtime.store
        written_to = []

        async def scenario() -> str:
            new_store = await anyio.to_thread.run_sync(open_store, StoreSettings(path=tmp_path / "next"), encoder.info)
            await runtime.write_lock.acquire()  # a write under way
            async with anyio.create_task_group() as group:
                group.start_soon(runtime.switch, settings, encoder, new_store, "next")
                while runtime.write_lock.statistics().tasks_waiting < 1:  # the switch waits its turn
                    await anyio.sleep(0.01)
                outcome = {}

                async def write() -> None:
                    try:
                        await runtime.write(written_to.append, runtime.store)
                        outcome["written"] = True
                    except StoreUnavailable as error:
                        outcome["refused"] = str(error)

                group.start_soon(write)
                await anyio.sleep(0.05)
                runtime.write_lock.release()
            return outcome.get("refused", "written")

        said = client.portal.call(scenario)
        assert "switched while this write waited" in said
        assert written_to == [] and runtime.store is not old_store
