"""The server's side of a re-index: notice that the collection name now stands for another index
(``snapshop reindex`` switched it, from another process) and serve from it.

The new index is opened and read into memory before the switch, so the first searches on it are
as fast as the last ones on the old; the model is loaded again only when the index was made by
another one. A switch that cannot be followed yet (the builder still holds the new index's lock)
is tried again at the next poll, while the old index keeps answering.
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread

from api.runtime import Runtime
from engine.errors import SnapshopError
from engine.model_loading import load_encoder
from engine.settings import Settings
from engine.store import open_store
from engine.store.aliases import EdgeAliases, IndexEntry, model_of

log = logging.getLogger(__name__)


async def watch_index(runtime: Runtime, settings: Settings) -> None:
    """Poll the embedded store's aliases forever (cancelled when the app stops)."""
    alias = settings.store.collection
    aliases = EdgeAliases(settings.store.path)
    while True:
        await anyio.sleep(settings.store.alias_poll_s)
        try:
            entry = await anyio.to_thread.run_sync(aliases.entry, alias)
            if entry is not None and entry.collection != runtime.collection:
                await follow(runtime, settings, entry)
        except SnapshopError as e:
            log.warning("the switch of '%s' cannot be followed yet: %s", alias, e)
        except Exception:  # a failed follow must not take the serving app down with it
            log.exception("following the switch of '%s' failed; the old index keeps answering", alias)


async def follow(runtime: Runtime, settings: Settings, entry: IndexEntry) -> None:
    """Open ``entry``'s index (and model, when it is another) and switch the runtime to it."""
    model = entry.model_settings(settings.model)
    target = settings.model_copy(update={"model": model,
                                         "store": settings.store.model_copy(update={"collection": entry.collection})})
    same_model = model_of(model) == model_of(runtime.settings.model)
    encoder = runtime.encoder if same_model else await anyio.to_thread.run_sync(load_encoder, model)
    store = await anyio.to_thread.run_sync(open_store, target.store, encoder.info)
    await anyio.to_thread.run_sync(store.warm)
    # The runtime's settings keep the alias as the collection name: what the operator configured.
    await runtime.switch(settings.model_copy(update={"model": model}), encoder, store, entry.collection)
    log.warning("now serving '%s' from index '%s' (model %s)", settings.store.collection, entry.collection,
                encoder.info.tag)
