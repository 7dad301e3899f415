"""The shopper page in a real headless Chromium against the real app (uvicorn on a free port).

Needs the Debian package `chromium` (`.ci/run` installs it); skipped with that reason without it.
Screenshots land in var/test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import expect
from PIL import Image

from api.app import create_app
from engine.settings import DEV_API_KEY, ApiSettings, IngestSettings, Settings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import REPO, write_catalog

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "var" / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium); the browser test needs it",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_rows, encoder):
    """The app on 127.0.0.1 with the 36-product shop, served by uvicorn in a thread."""
    folder = tmp_path_factory.mktemp("browser")
    catalog = write_catalog(small_rows, folder / "shop")
    settings = Settings(store=StoreSettings(path=folder / "store"), api=ApiSettings(images_root=folder / "shop"))
    with open_store(settings.store, encoder.info) as store:
        ingest_catalog(read_catalog(catalog), encoder, store, IngestSettings(), progress=False)
    port = free_port()
    config = uvicorn.Config(create_app(settings, encoder=encoder), host="127.0.0.1", port=port, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", folder / "shop"
    uvicorn_server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture()
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1360, "height": 1000},
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page
        finally:
            context.close()


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")


def search_and_wait(page, action) -> None:
    """Do ``action`` (which starts a search) and wait until its results are drawn."""
    with page.expect_response(lambda response: response.url.endswith("/search")):
        action()
    page.wait_for_selector("#results[data-status=ready]")


def shown_prices(page) -> list[float]:
    return [float(value) for value in page.locator("#results .card").evaluate_all(
        "cards => cards.map(card => card.dataset.price)")]


def test_a_shopper_finds_a_product_by_photo_and_narrows_by_price(server, page, small_rows):
    base_url, shop = server
    product = small_rows[small_rows.category == "Handbags"].iloc[2]
    open_page(page, base_url)
    photo = shop / "images" / Path(product["image"]).name
    search_and_wait(page, lambda: page.set_input_files("#photo-input", str(photo)))
    assert page.locator(f'#results .card[data-id="{product["id"]}"]').is_visible()
    # The photo arrives after the card is drawn (a loaded machine took longer than the assert did):
    # wait for it to load, and fail if it never does (a broken image keeps naturalWidth 0).
    first_photo = page.locator("#results .card img").first.element_handle()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=first_photo)
    page.screenshot(path=str(ARTIFACTS / "shopper-photo-search.png"), full_page=True)

    low, high = 20.0, 60.0
    page.fill("#min-price", str(low))
    page.fill("#max-price", str(high))
    search_and_wait(page, lambda: page.click("#search-button"))
    prices = shown_prices(page)
    assert prices and all(low <= price <= high for price in prices), prices
    page.screenshot(path=str(ARTIFACTS / "shopper-price-filter.png"), full_page=True)


def test_a_shopper_draws_a_box_on_the_photo_and_searches_that_part(server, page, small_rows):
    """Two products side by side in one photo: a box dragged around the right one searches it alone
    (the answer names the box searched); a click on the photo goes back to all of it."""
    base_url, shop = server
    left, right = (small_rows[small_rows.category == c].iloc[1] for c in ("Watches", "Sports Shoes"))
    pair = Image.new("RGB", (448, 224), "white")
    for offset, product in ((0, left), (224, right)):
        pair.paste(Image.open(shop / "images" / Path(product["image"]).name).convert("RGB").resize((224, 224)),
                   (offset, 0))
    photo = shop.parent / "pair.jpg"
    pair.save(photo, "JPEG", quality=92)
    open_page(page, base_url)
    search_and_wait(page, lambda: page.set_input_files("#photo-input", str(photo)))
    box = page.locator("#photo-preview").bounding_box()
    # The preview shows the 2:1 photo letterboxed in a square: its right half spans these points.
    top = box["y"] + box["height"] / 4
    with page.expect_response(lambda response: response.url.endswith("/search")) as answered:
        page.mouse.move(box["x"] + box["width"] * 0.52, top + 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.75, top + box["height"] / 4, steps=4)
        page.mouse.move(box["x"] + box["width"] * 0.99, top + box["height"] / 2 - 2, steps=4)
        page.mouse.up()
    page.wait_for_selector("#results[data-status=ready]")
    region = answered.value.json()["region"]  # the box the page sent, as the API searched it
    assert region[0] > 0.5 and region[2] < 0.5, region
    assert page.locator("#crop-box").is_visible()
    first = page.locator("#results .card").first.get_attribute("data-id")
    assert first == str(right["id"])
    page.screenshot(path=str(ARTIFACTS / "shopper-crop-box.png"), full_page=True)
    search_and_wait(page, lambda: page.locator("#photo-preview").click())
    assert page.locator("#crop-box").is_hidden()


def test_categories_come_from_the_facets_and_filter_the_grid(server, page):
    open_page(page, server[0])
    page.fill("#text-input", "black")
    search_and_wait(page, lambda: page.press("#text-input", "Enter"))
    search_and_wait(page, lambda: page.click('.chip[data-category="Watches"]'))
    categories = page.locator("#results .card .category").all_inner_texts()
    assert categories and set(categories) == {"Watches"}


def test_clicking_a_product_shows_similar_products(server, page):
    open_page(page, server[0])
    page.fill("#text-input", "sports shoes")
    search_and_wait(page, lambda: page.press("#text-input", "Enter"))
    first = page.locator("#results .card").first
    clicked = first.get_attribute("data-id")
    first.click()
    page.wait_for_selector("#similar-dialog[open] #similar-results[data-status=ready] .card")
    similar = page.locator("#similar-results .card").evaluate_all("cards => cards.map(card => card.dataset.id)")
    assert similar and clicked not in similar
    page.screenshot(path=str(ARTIFACTS / "similar-products.png"))


def test_the_merchandiser_tunes_weights_live_and_sees_explanations(server, page):
    open_page(page, f"{server[0]}/merchandiser")
    assert page.locator("#merch-panel").is_visible()
    page.fill("#text-input", "blue denim jeans")
    search_and_wait(page, lambda: page.press("#text-input", "Enter"))
    assert page.locator("#results .card .explain").first.is_visible()
    assert "text" in signals_shown(page)

    def switch_off_the_title_signal():
        page.eval_on_selector("#weight-text", "input => { input.value = '0'; "
                                              "input.dispatchEvent(new Event('input', {bubbles: true})); }")

    search_and_wait(page, switch_off_the_title_signal)
    assert page.locator("#weight-text + output").inner_text() == "0.00"
    assert "text" not in signals_shown(page)
    page.screenshot(path=str(ARTIFACTS / "merchandiser.png"), full_page=True)


def signals_shown(page) -> set[str]:
    """The signals drawn in the explanation bars of every card."""
    return set(page.locator("#results .card .bar span").evaluate_all("parts => parts.map(p => p.dataset.signal)"))


def card_ids(page) -> list[str]:
    return page.locator("#results .card").evaluate_all("cards => cards.map(card => card.dataset.id)")


def test_a_shopper_reads_page_2_sorts_and_refines_by_a_facet(server, page):
    open_page(page, server[0])
    page.fill("#text-input", "black")
    search_and_wait(page, lambda: page.press("#text-input", "Enter"))
    first_page = card_ids(page)
    assert len(first_page) == 24 and page.locator("#more").is_visible()
    search_and_wait(page, lambda: page.click("#more"))  # page 2 joins page 1: nothing repeated
    both = card_ids(page)
    assert both[:24] == first_page and len(both) == len(set(both)) > 24
    assert page.locator("#results").get_attribute("data-page") == "2"

    search_and_wait(page, lambda: page.select_option("#sort", "price_asc"))
    prices = shown_prices(page)
    assert prices and prices == sorted(prices)
    page.screenshot(path=str(ARTIFACTS / "shopper-sorted-with-facets.png"), full_page=True)

    group = page.locator("#facets section").first
    name = group.get_attribute("data-facet")
    value = group.locator("button").first.get_attribute("data-value")
    counted = int(group.locator("button small").first.inner_text())
    search_and_wait(page, lambda: group.locator("button").first.click())
    shown = page.locator("#results .card").evaluate_all(
        f"cards => cards.map(card => JSON.parse(card.dataset.attributes)[{name!r}])")
    assert shown and set(shown) == {value} and len(shown) <= counted
    prices = shown_prices(page)
    assert prices == sorted(prices)  # the sort stays while refining


def test_facet_counts_change_with_the_query(server, page):
    open_page(page, server[0])

    def counts(text):
        page.fill("#text-input", text)
        search_and_wait(page, lambda: page.press("#text-input", "Enter"))
        return page.locator("#facets button").evaluate_all(
            "buttons => buttons.map(b => b.closest('section').dataset.facet + '=' + b.dataset.value + ':' + "
            "b.querySelector('small').textContent)")

    assert counts("analog wrist watch") != counts("blue denim jeans")


def test_the_merchandiser_previews_saves_and_deletes_a_rule(server, page):
    open_page(page, f"{server[0]}/merchandiser")
    page.fill("#text-input", "black")
    search_and_wait(page, lambda: page.press("#text-input", "Enter"))
    first = card_ids(page)[0]
    page.fill("#rules-key", DEV_API_KEY)
    search_and_wait(page, lambda: page.dispatch_event("#rules-key", "change"))
    page.select_option("#rule-action", "hide")
    search_and_wait(page, lambda: page.fill("#rule-product", first))  # previewed live, not saved
    assert first not in card_ids(page)
    assert page.locator("#rule-list li").count() == 0
    search_and_wait(page, lambda: page.click("#rule-save"))
    # Saving posts the rule, reloads the list, then searches: wait for the list itself, then for
    # the search that follows it (a preview's answer can arrive first on a loaded machine).
    expect(page.locator("#rule-list li")).to_have_count(1, timeout=15_000)
    page.wait_for_selector("#results[data-status=ready]")
    assert first not in card_ids(page), page.locator("#rule-status").text_content()
    page.screenshot(path=str(ARTIFACTS / "merchandiser-rules.png"), full_page=True)
    search_and_wait(page, lambda: page.click("#rule-list li button"))
    assert page.locator("#rule-list li").count() == 0 and card_ids(page)[0] == first
