// The shopper page: photo and/or text in, a grid of products out; the merchandiser panel tunes
// the ranker's weights live. Plain DOM, no build step; every product field is set as text, never
// as HTML.
"use strict";

// The signals, their labels, help and bounds come from the ranker's registry (/search/defaults);
// colours are given in its order, so a new signal gets one too.
const PALETTE = ["#e4572e", "#5c8001", "#f3a712", "#29335c", "#669bbc", "#2a9d8f", "#8d6a9f", "#a7c957", "#d81159",
                 "#3d5a80", "#ee6c4d", "#6a994e"];
const LIVE_DELAY_MS = 250;

const $ = (selector) => document.querySelector(selector);
const PAGE_SIZE = 24;
const state = {
  photo: null, crop: null, drag: null, categories: new Set(), defaults: null, weights: {}, mix: 0.5,
  attributes: new Map(), next: null, rules: { rules: [], synonyms: [] }, // attribute name -> Set of chosen values; the next page's offset
  merchandiser: location.pathname.startsWith("/merchandiser"), inflight: null, timer: null,
};
const priceFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

// --- talking to the API ---------------------------------------------------------------------------
async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(reasonOf(body, response));
  return body;
}

function reasonOf(body, response) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
  return detail || `${response.status} ${response.statusText}`;
}

function searchForm(offset = 0) {
  const form = new FormData();
  const text = $("#text-input").value.trim();
  if (text) form.append("text", text);
  if (state.photo) form.append("photo", state.photo, state.photo.name || "photo.jpg");
  if (state.photo && state.crop) form.append("crop", state.crop.map((v) => v.toFixed(4)).join(","));
  for (const category of state.categories) form.append("category", category);
  const min = $("#min-price").value, max = $("#max-price").value;
  if (min !== "") form.append("min_price", min);
  if (max !== "") form.append("max_price", max);
  form.append("k", String(PAGE_SIZE));
  form.append("offset", String(offset));
  form.append("sort", $("#sort").value);
  if (offset === 0) form.append("facets", "true");  // the counts follow the query, not the page
  const chosen = [...state.attributes].filter(([, values]) => values.size);
  if (chosen.length) form.append("attributes", JSON.stringify(Object.fromEntries(chosen.map(([n, v]) => [n, [...v]]))));
  const draft = state.merchandiser ? draftRule() : null;
  if (draft && state.rules) {  // live preview: the stored rules and the one being written, nothing saved
    form.append("merchandising", JSON.stringify({ ...state.rules, rules: [...state.rules.rules, draft] }));
  }
  if (state.defaults) {
    form.append("photo_text_mix", String(state.mix));
    form.append("weights", JSON.stringify(state.weights));
  }
  return form;
}

// --- search -----------------------------------------------------------------------------------------
async function runSearch() {
  const results = $("#results");
  if (!state.photo && !$("#text-input").value.trim()) {
    setStatus("Drop a photo or type what you are looking for.");
    results.replaceChildren();
    results.dataset.status = "idle";
    return;
  }
  if (state.inflight) state.inflight.abort();  // live sliders: only the latest query matters
  const controller = new AbortController();
  state.inflight = controller;
  results.dataset.status = "loading";
  setStatus("Searching…");
  try {
    const body = await api("/search", { method: "POST", body: searchForm(), signal: controller.signal });
    renderResults(results, body.data);
    renderFacets(body.facets);
    showMore(body);
    setStatus(summary(body), body.nothing_close && body.count ? "warn" : "");
    results.dataset.page = "1";
    results.dataset.status = "ready";
  } catch (error) {
    if (error.name === "AbortError") return;
    results.replaceChildren();
    setStatus(error.message, "error");
    results.dataset.status = "error";
  } finally {
    if (state.inflight === controller) state.inflight = null;
  }
}

async function loadMore() {
  const results = $("#results");
  if (state.next == null || state.inflight) return;
  const controller = new AbortController();
  state.inflight = controller;
  results.dataset.status = "loading";
  try {
    const body = await api("/search", { method: "POST", body: searchForm(state.next), signal: controller.signal });
    results.append(...body.data.map(card));
    showMore(body);
    results.dataset.page = String(Number(results.dataset.page || "1") + 1);
    results.dataset.status = "ready";
  } catch (error) {
    if (error.name === "AbortError") return;
    setStatus(error.message, "error");
    results.dataset.status = "error";
  } finally {
    if (state.inflight === controller) state.inflight = null;
  }
}

function showMore(body) {
  state.next = body.next_offset;
  $("#more").hidden = body.next_offset == null;
}

function summary(body) {
  if (!body.count) return "No products match these filters.";
  const boxed = state.crop && body.region ? " for the box you drew" : "";
  const found = (body.total > body.count ? `${body.total} products` : `${body.count} product${body.count === 1 ? "" : "s"}`) + boxed;
  return body.nothing_close ? `${found} — nothing very close; these are the nearest.` : found;
}

function setStatus(message, kind = "") {
  const status = $("#status");
  status.textContent = message;
  status.className = `status ${kind}`;
}

// --- cards --------------------------------------------------------------------------------------------
function renderResults(container, products) {
  if (!products.length) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "Nothing here. Try fewer filters.";
    container.replaceChildren(empty);
    return;
  }
  container.replaceChildren(...products.map(card));
}

function card(product) {
  const node = $("#card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = product.id;
  node.dataset.price = product.price ?? "";
  node.dataset.attributes = JSON.stringify(product.attributes || {});
  if (product.in_stock === false) {
    const out = Object.assign(document.createElement("span"), { className: "stock", textContent: "out of stock" });
    node.querySelector(".meta").append(out);
  }
  fillSwatches(node.querySelector(".swatches"), product);
  const image = node.querySelector("img");
  if (product.images.length) image.src = product.images[0];
  image.alt = product.title;
  node.querySelector(".title").textContent = product.title;
  node.querySelector(".title").title = product.title;
  node.querySelector(".price-tag").textContent =
    product.price == null ? "" : priceFormat.format(product.price);
  node.querySelector(".category").textContent = product.category || "";
  fillExplanation(node.querySelector(".explain"), product);
  if (state.merchandiser && product.rules && product.rules.length) {
    const note = Object.assign(document.createElement("div"), { className: "rules-note", textContent: product.rules.join("; ") });
    node.querySelector(".info").append(note);
  }
  node.addEventListener("click", () => openSimilar(product));
  node.addEventListener("keydown", (event) => { if (event.key === "Enter") openSimilar(product); });
  return node;
}

function fillExplanation(explain, product) {
  explain.hidden = !state.merchandiser;
  const bar = explain.querySelector(".bar");
  const shares = Object.entries(product.explanation || {}).filter(([, share]) => share > 0);
  bar.replaceChildren(...shares.map(([signal, share]) => {
    const part = document.createElement("span");
    part.dataset.signal = signal;
    part.style.width = `${(share * 100).toFixed(1)}%`;
    part.style.background = signalColour(signal);
    part.title = `${signalOf(signal).label}: ${(share * 100).toFixed(0)}% of the score` +
      (product.signals[signal] != null ? ` (match ${product.signals[signal].toFixed(2)})` : "");
    return part;
  }));
  explain.querySelector(".score").textContent = product.score.toFixed(3);
}

function fillSwatches(container, product) {
  const variants = product.variants || [];
  container.hidden = variants.length < 2;
  container.replaceChildren(...variants.map((variant) => {
    const swatch = document.createElement("img");
    swatch.src = variant.image || "";
    swatch.alt = swatch.title = variant.label || variant.id;
    swatch.dataset.variant = variant.id;
    return swatch;
  }));
}

// --- facets that follow the query ------------------------------------------------------------------
function renderFacets(facets) {
  const container = $("#facets");
  if (!facets) { container.replaceChildren(); return; }
  const groups = facets.attributes.filter((facet) => facet.values.length > 1 || state.attributes.get(facet.name)?.size);
  container.replaceChildren(...groups.map((facet) => {
    const group = document.createElement("section");
    group.dataset.facet = facet.name;
    const heading = Object.assign(document.createElement("h3"), { textContent: facet.name.replaceAll("_", " ") });
    group.append(heading, ...facet.values.slice(0, 12).map(({ value, count }) => facetButton(facet.name, value, count)));
    return group;
  }));
}

function facetButton(name, value, count) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.value = value;
  const chosen = state.attributes.get(name);
  button.setAttribute("aria-pressed", String(Boolean(chosen && chosen.has(value))));
  const small = Object.assign(document.createElement("small"), { textContent: count });
  button.append(value, small);
  button.addEventListener("click", () => {
    const values = state.attributes.get(name) || new Set();
    if (values.has(value)) values.delete(value); else values.add(value);
    state.attributes.set(name, values);
    runSearch();
  });
  return button;
}

// --- similar products ------------------------------------------------------------------------------
async function openSimilar(product) {
  const dialog = $("#similar-dialog");
  const grid = $("#similar-results");
  $("#similar-title").textContent = `Like “${product.title}”`;
  grid.replaceChildren();
  grid.dataset.status = "loading";
  if (!dialog.open) dialog.showModal();
  try {
    const params = new URLSearchParams({ k: "12" });
    for (const category of state.categories) params.append("category", category);
    const body = await api(`/products/${encodeURIComponent(product.id)}/similar?${params}`);
    renderResults(grid, body.data);
    grid.dataset.status = "ready";
  } catch (error) {
    const message = document.createElement("p");
    message.className = "empty";
    message.textContent = error.message;
    grid.replaceChildren(message);
    grid.dataset.status = "error";
  }
}

// --- photo input -------------------------------------------------------------------------------------
function setPhoto(file) {
  if (file && !file.type.startsWith("image/")) {
    setStatus(`“${file.name}” is not an image.`, "error");
    return;
  }
  state.photo = file || null;
  setCrop(null);
  const preview = $("#photo-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !file;
  $("#drop-hint").hidden = Boolean(file);
  $("#photo-clear").hidden = !file;
  if (file) preview.src = URL.createObjectURL(file);
  else { preview.removeAttribute("src"); $("#photo-input").value = ""; }
  runSearch();
}

// --- a box drawn on the photo: search only that part (as Lens does) --------------------------------------
function photoRect() {
  // The photo's drawn area inside the preview (object-fit: contain leaves bars around it).
  const preview = $("#photo-preview");
  const box = preview.getBoundingClientRect();
  const scale = Math.min(box.width / preview.naturalWidth, box.height / preview.naturalHeight);
  const width = preview.naturalWidth * scale, height = preview.naturalHeight * scale;
  return { left: box.left + (box.width - width) / 2, top: box.top + (box.height - height) / 2, width, height };
}

function setCrop(crop) {
  state.crop = crop;
  const marker = $("#crop-box");
  marker.hidden = !crop;
  if (!crop) return;
  const rect = photoRect(), zone = $("#drop-zone").getBoundingClientRect();
  Object.assign(marker.style, {
    left: `${rect.left - zone.left + crop[0] * rect.width}px`, top: `${rect.top - zone.top + crop[1] * rect.height}px`,
    width: `${crop[2] * rect.width}px`, height: `${crop[3] * rect.height}px`,
  });
}

function wireCropBox() {
  const preview = $("#photo-preview");
  const clamp = (v) => Math.min(1, Math.max(0, v));
  const point = (event) => {
    const rect = photoRect();
    return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
  };
  preview.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    preview.setPointerCapture(event.pointerId);
    state.drag = { start: point(event), moved: false };
  });
  preview.addEventListener("pointermove", (event) => {
    if (!state.drag) return;
    const [x0, y0] = state.drag.start, [x1, y1] = point(event);
    const crop = [Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0)];
    if (crop[2] > 0.03 && crop[3] > 0.03) { state.drag.moved = true; setCrop(crop); }
  });
  preview.addEventListener("pointerup", () => {
    const drag = state.drag;
    state.drag = null;
    if (drag && drag.moved) runSearch();
    else if (state.crop) { setCrop(null); runSearch(); }  // a click without a drag: the whole photo again
  });
  // A drag (or a click clearing the box) on the photo must not open the file chooser.
  preview.addEventListener("click", (event) => event.preventDefault());
}

function wirePhotoInput() {
  wireCropBox();
  const zone = $("#drop-zone");
  $("#photo-input").addEventListener("change", (event) => setPhoto(event.target.files[0]));
  $("#photo-clear").addEventListener("click", (event) => { event.preventDefault(); setPhoto(null); });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("#photo-input").click(); }
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) setPhoto(file);
  });
  // A photo pasted from the clipboard works too.
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) setPhoto(file);
  });
}

// --- filters -------------------------------------------------------------------------------------------
async function loadFacets() {
  try {
    const facets = await api("/facets");
    $("#categories").replaceChildren(...facets.categories.map(categoryChip));
    const buckets = facets.price_histogram;
    if (buckets.length) {
      $("#min-price").placeholder = `min ${Math.floor(buckets[0].min)}`;
      $("#max-price").placeholder = `max ${Math.ceil(buckets[buckets.length - 1].max)}`;
    }
  } catch (error) {
    setStatus(`Categories could not be loaded: ${error.message}`, "error");
  }
}

function categoryChip({ name, count }) {
  const chip = document.createElement("button");
  chip.type = "button";
  chip.className = "chip";
  chip.dataset.category = name;
  chip.setAttribute("aria-pressed", "false");
  chip.append(name);
  const small = document.createElement("small");
  small.textContent = count;
  chip.append(small);
  chip.addEventListener("click", () => {
    const on = !state.categories.has(name);
    if (on) state.categories.add(name); else state.categories.delete(name);
    chip.setAttribute("aria-pressed", String(on));
    runSearch();
  });
  return chip;
}

function wireFilters() {
  $("#search-form").addEventListener("submit", (event) => { event.preventDefault(); runSearch(); });
  for (const id of ["#min-price", "#max-price"]) $(id).addEventListener("change", runSearch);
  $("#sort").addEventListener("change", runSearch);
  $("#more").addEventListener("click", loadMore);
  $("#clear-filters").addEventListener("click", () => {
    state.categories.clear();
    state.attributes.clear();
    for (const chip of document.querySelectorAll(".chip")) chip.setAttribute("aria-pressed", "false");
    $("#min-price").value = "";
    $("#max-price").value = "";
    runSearch();
  });
}

// --- merchandiser panel ------------------------------------------------------------------------------
async function loadDefaults() {
  try {
    state.defaults = await api("/search/defaults");
  } catch (error) {
    setStatus(`Ranker settings could not be loaded: ${error.message}`, "error");
    return;
  }
  resetWeights();
  const names = state.defaults.signals.map((signal) => signal.name);
  $("#weights").replaceChildren(...names.map(weightSlider));
  $("#legend").replaceChildren(...names.map(legendEntry));
}

function signalOf(name) {
  const signals = (state.defaults && state.defaults.signals) || [];
  return signals.find((signal) => signal.name === name) || { name, label: name, help: "", maximum: 10 };
}

function signalColour(name) {
  const index = ((state.defaults && state.defaults.signals) || []).findIndex((signal) => signal.name === name);
  return index >= 0 ? PALETTE[index % PALETTE.length] : "#999";
}

function resetWeights() {
  state.weights = { ...state.defaults.weights };
  state.mix = state.defaults.photo_text_mix;
  for (const input of document.querySelectorAll("#weights input")) {
    input.value = state.weights[input.dataset.signal];
    input.nextElementSibling.textContent = Number(input.value).toFixed(2);
  }
  $("#mix").value = state.mix;
  $("#mix-value").textContent = state.mix.toFixed(2);
}

function weightSlider(signal) {
  const row = document.createElement("div");
  row.className = "slider";
  const label = document.createElement("label");
  label.htmlFor = `weight-${signal}`;
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = signalColour(signal);
  label.append(swatch, signalOf(signal).label);
  const input = Object.assign(document.createElement("input"), {
    // Room above each default (the appearance weight's default is well above the others').
    type: "range", min: "0", step: "0.05", title: signalOf(signal).help,
    max: String(Math.min(signalOf(signal).maximum, Math.max(3, 2 * state.defaults.weights[signal]))),
    id: `weight-${signal}`, value: state.weights[signal],
  });
  input.dataset.signal = signal;
  const output = document.createElement("output");
  output.textContent = Number(input.value).toFixed(2);
  input.addEventListener("input", () => {
    state.weights[signal] = Number(input.value);
    output.textContent = Number(input.value).toFixed(2);
    searchSoon();
  });
  row.append(label, input, output);
  return row;
}

function legendEntry(signal) {
  const entry = document.createElement("span");
  const swatch = document.createElement("i");
  swatch.className = "swatch";
  swatch.style.background = signalColour(signal);
  entry.append(swatch, signalOf(signal).label);
  return entry;
}

function searchSoon() {
  // A search is due: the results on show are already stale, so say so at once (a page or a test
  // that waits for "ready" then waits for this search, not for one that was answered before it).
  $("#results").dataset.status = "loading";
  // A search still on its way answers the query as it was: dropped now, so its answer cannot be
  // drawn (and the page say "ready") before the one that is due.
  if (state.inflight) state.inflight.abort();
  clearTimeout(state.timer);
  state.timer = setTimeout(runSearch, LIVE_DELAY_MS);
}

function showMerchandiser(open) {
  state.merchandiser = open;
  $("#merch-panel").hidden = !open;
  $("#merch-toggle").setAttribute("aria-expanded", String(open));
  for (const explain of document.querySelectorAll(".explain")) explain.hidden = !open;
}

function wireMerchandiser() {
  $("#merch-toggle").addEventListener("click", () => showMerchandiser(!state.merchandiser));
  $("#mix").addEventListener("input", (event) => {
    state.mix = Number(event.target.value);
    $("#mix-value").textContent = state.mix.toFixed(2);
    searchSoon();
  });
  $("#reset-weights").addEventListener("click", () => { resetWeights(); runSearch(); });
  $("#similar-dialog").addEventListener("click", (event) => {
    if (event.target.matches("[data-close]") || event.target === event.currentTarget) event.currentTarget.close();
  });
}

// --- merchandising rules ------------------------------------------------------------------------------
function draftRule() {
  const value = (id) => $(id).value.trim();
  const rule = { action: $("#rule-action").value, amount: Number($("#rule-amount").value || "0.2") };
  for (const [field, id] of [["query", "#rule-query"], ["category", "#rule-category"],
    ["product_id", "#rule-product"], ["attribute", "#rule-attribute"], ["value", "#rule-value"]]) {
    if (value(id)) rule[field] = value(id);
  }
  if (value("#rule-position")) rule.position = Number(value("#rule-position"));
  const complete = rule.action === "pin" ? rule.product_id && rule.position
    : rule.action === "hide" ? rule.product_id || (rule.attribute && rule.value) : rule.attribute && rule.value;
  return complete ? rule : null;
}

async function loadRules() {
  const key = $("#rules-key").value.trim();
  if (!key) { state.rules = { rules: [], synonyms: [] }; return; }
  try {
    state.rules = await api("/merchandising", { headers: { "X-API-Key": key } });
    $("#rule-list").replaceChildren(...state.rules.rules.map(ruleItem));
    $("#rule-status").textContent = `${state.rules.rules.length} rule(s) stored.`;
  } catch (error) {
    $("#rule-status").textContent = `Rules could not be loaded: ${error.message}`;
  }
}

function ruleItem(rule) {
  const item = document.createElement("li");
  item.dataset.rule = rule.id;
  const where = [rule.query && `query “${rule.query}”`, rule.category && `category ${rule.category}`].filter(Boolean);
  const what = rule.attribute ? `${rule.attribute} = ${rule.value}` : `product ${rule.product_id}`;
  item.append(`${rule.action} ${what}${rule.action === "pin" ? ` at ${rule.position}` : ""}` +
    (where.length ? ` for ${where.join(", ")}` : ""));
  const remove = Object.assign(document.createElement("button"), { type: "button", className: "link", textContent: "delete" });
  remove.addEventListener("click", async () => {
    await api(`/rules/${encodeURIComponent(rule.id)}`, { method: "DELETE", headers: { "X-API-Key": $("#rules-key").value.trim() } })
      .catch((error) => { $("#rule-status").textContent = error.message; });
    await loadRules();
    runSearch();
  });
  item.append(remove);
  return item;
}

async function saveRule(event) {
  event.preventDefault();
  const rule = draftRule();
  if (!rule) { $("#rule-status").textContent = "Fill in what the rule needs first."; return; }
  try {
    await api("/rules", { method: "POST", body: JSON.stringify(rule),
      headers: { "Content-Type": "application/json", "X-API-Key": $("#rules-key").value.trim() } });
    $("#rule-form").reset();
    await loadRules();
    runSearch();
  } catch (error) {
    $("#rule-status").textContent = `Not saved: ${error.message}`;
  }
}

function wireRules() {
  $("#rule-form").addEventListener("submit", saveRule);
  $("#rule-form").addEventListener("input", searchSoon);
  $("#rules-key").addEventListener("change", () => loadRules().then(runSearch));
}

// --- start -----------------------------------------------------------------------------------------------
wirePhotoInput();
wireFilters();
wireMerchandiser();
wireRules();
showMerchandiser(state.merchandiser);
Promise.all([loadFacets(), loadDefaults()]).then(() => { document.body.dataset.ready = "true"; });
