"""Hostile photos: only regular files are read, and photos decoded at once stay within a budget.

A FIFO in a catalog's folder used to hang an ingest for ever, and ``--image /dev/zero`` read
until the kernel killed the process; eight concurrent uploads of a 59-megapixel 16-bit PNG took
a server from 2 to 5 GB.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import DecodeBusy, InvalidImage
from engine.images import DecodeBudget, decode_image, decoding_cost, load_image_file
from engine.settings import IngestSettings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import FASHION, require

NOT_REGULAR = "not a regular file (a FIFO, device or socket); photos are read from files only"


def png(width: int, height: int, dtype=np.uint8, level: int = 1) -> bytes:
    """A large PNG that is small on disk (one stripe in a flat field)."""
    pixels = np.zeros((height, width), dtype=dtype)
    pixels[:: max(1, height // 7)] = np.iinfo(dtype).max // 2
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=level)
    return out.getvalue()


def test_a_fifo_in_the_catalog_folder_is_a_bad_photo_and_the_ingest_goes_on(tmp_path, encoder):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(next(iter(sorted((require(FASHION) / "images").glob("*.jpg")))), images / "good.jpg")
    os.mkfifo(images / "pipe.jpg")
    (tmp_path / "catalog.csv").write_text("id,title,image\n1,Pipe,images/pipe.jpg\n2,Good,images/good.jpg\n")
    outcome: dict = {}

    def run():
        with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as store:
            outcome["summary"] = ingest_catalog(read_catalog(tmp_path / "catalog.csv"), encoder, store,
                                                IngestSettings(), progress=False)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():  # let a reader stuck on the FIFO go, then fail
        os.close(os.open(images / "pipe.jpg", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the ingest hung on a FIFO")
    summary = outcome["summary"]
    assert (summary.added, len(summary.skipped_rows)) == (1, 1)
    assert [str(problem) for problem in summary.bad_images] == [
        f"row 1 (id 1): {images / 'pipe.jpg'}: {NOT_REGULAR}"]


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_as_a_photo_is_refused_without_reading_it(path):
    with pytest.raises(InvalidImage, match="not a regular file"):
        load_image_file(Path(path))


def test_photos_decoded_at_once_stay_within_the_shared_budget():
    data = png(3000, 3000, np.uint16)  # 9 megapixels of 16-bit grey
    probe = Image.open(io.BytesIO(data))
    cost = decoding_cost(probe, len(data))
    budget = DecodeBudget(int(cost * 2.5))  # room for two at once, not three
    sizes, errors = [], []

    def decode():
        try:
            sizes.append(decode_image(data, budget=budget).size)
        except Exception as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=decode) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sizes == [(448, 448)] * 6
    assert cost * 2 == budget.peak and budget.in_use == 0


def test_a_photo_larger_than_the_whole_budget_is_refused_and_a_full_budget_answers_busy():
    data = png(3000, 3000)
    cost = decoding_cost(Image.open(io.BytesIO(data)), len(data))
    with pytest.raises(InvalidImage, match=r"more than the budget of \d+ MB for all photos being decoded at once"):
        decode_image(data, budget=DecodeBudget(cost - 1))
    budget = DecodeBudget(cost, wait_s=0.2)
    with budget.reserve(cost // 2), pytest.raises(DecodeBusy, match="try again in a moment"):
        decode_image(data, budget=budget)
    assert decode_image(data, budget=budget).size == (448, 448)  # room again once the other is done
