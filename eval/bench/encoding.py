"""Encoder throughput, images and texts, against the FLOP ceiling measured on this machine."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
from PIL import Image

from engine.encoder import Encoder
from eval.bench.corpus import photo_vectors
from eval.bench.machine import count_flops, repeat_timed


@contextmanager
def batch_size(encoder: Encoder, size: int):
    """Let one forward pass take ``size`` items, then restore the configured batch size."""
    saved = encoder.batch_size
    encoder.batch_size = max(saved, size)
    try:
        yield
    finally:
        encoder.batch_size = saved


def bench_encoder(encoder: Encoder, images: Sequence[Image.Image], titles: Sequence[str], batches: Sequence[int],
                  ceiling_gflops: float, min_seconds: float, text_ceiling_gflops: float | None = None) -> dict:
    """Images/s and texts/s at each batch size, with achieved GFLOP/s and their share of the ceiling.

    An "image" is a photo with all its vectors (joint space, and appearance where the model makes
    it), a "text" a title with both of its (joint space and sentence): what ingest and queries
    need of each. ``text_ceiling_gflops``: the text tower's ceiling, where it runs in another
    precision than the image tower (the CPU default puts it in bf16).
    """
    text_ceiling = text_ceiling_gflops or ceiling_gflops
    report: dict = {"precision": str(encoder.dtype).replace("torch.", ""),
                    "text_precision": str(encoder.text_dtype or encoder.dtype).replace("torch.", ""),
                    "ceiling_gflops": round(ceiling_gflops, 1), "text_ceiling_gflops": round(text_ceiling, 1),
                    "image": {}, "text": {}}
    # FLOPs per photo counted once, on one photo, with the trunks in torch: a batch's chunks run on
    # worker threads, where torch's FLOP counter (a mode of the calling thread) does not see them,
    # nor does it see ONNX Runtime (engine.image_runtime). The work per photo is the same.
    in_torch = dataclasses.replace(encoder, image_runtime=None)
    photo_flops = count_flops(lambda: photo_vectors(in_torch, images[:1]))
    with batch_size(encoder, max(batches)):
        # FLOPs per text counted on the largest batch: a query-sized one runs in ONNX Runtime
        # (engine.text_runtime), which the counter does not see; the work per text is the same.
        text_flops = np.mean([count_flops(call) for call in _text_calls(encoder, titles, max(batches))[:8]])
        text_flops /= max(batches)
        for size in batches:
            chunk = [images[i % len(images)] for i in range(size)]
            report["image"][f"batch_{size}"] = _measure(
                [lambda chunk=chunk: photo_vectors(encoder, chunk)], size, ceiling_gflops, min_seconds, photo_flops)
            report["text"][f"batch_{size}"] = _measure(_text_calls(encoder, titles, size), size, text_ceiling,
                                                       min_seconds, text_flops)
    for kind in ("image", "text"):
        first, last = (report[kind][f"batch_{b}"]["per_s"] for b in (min(batches), max(batches)))
        report[kind][f"batch_{max(batches)}_over_batch_{min(batches)}"] = round(last / first, 2)
    return report


def _text_calls(encoder: Encoder, titles: Sequence[str], size: int) -> list[Callable[[], object]]:
    """One call per distinct batch of ``size`` titles: both of a text's vectors, as queries need."""
    return [lambda s=s: (encoder.encode_texts(s), encoder.encode_sentences(s)) for s in _title_slices(titles, size)]


def _title_slices(titles: Sequence[str], size: int) -> list[list[str]]:
    """Distinct batches of titles, at least two: repeating one would be answered from the encoder's
    last-batch memo instead of running the model."""
    padded = [titles[i % len(titles)] for i in range(max(len(titles), size))]
    slices = [padded[i * size : (i + 1) * size] for i in range(min(len(padded) // size, 64))]
    if len(slices) == 1:  # the same words in capitals: another memo key, the same work (uncased model)
        slices.append([title.upper() for title in slices[0]])
    return slices


def _measure(calls: list[Callable[[], object]], items: int, ceiling: float, min_seconds: float,
             flops_per_item: float | None = None) -> dict:
    """``flops_per_item``: counted by the caller; otherwise counted here on the calls."""
    if flops_per_item is None:
        flops = np.mean([count_flops(call) for call in calls[:8]]) / items  # also warms every call up
    else:
        for call in calls[:8]:  # the warm-up the count would have been
            call()
        flops = flops_per_item
    turn = iter(range(10**9))
    times = repeat_timed(lambda: calls[next(turn) % len(calls)](), min_repeats=3, min_seconds=min_seconds)
    seconds = float(np.median(times))
    achieved = flops * items / seconds / 1e9
    return {"per_s": round(items / seconds, 2), "ms_per_call": round(seconds * 1000, 2),
            "gflop_per_item": round(flops / 1e9, 4), "achieved_gflops": round(achieved, 2),
            "ceiling_fraction": round(achieved / ceiling, 4), "calls": len(times)}
