// The merchandiser panel's search analytics: GET /analytics/report with the API key, shown as lists.
"use strict";

function analyticsList(title, rows, line) {
  const section = document.createElement("div");
  const heading = document.createElement("h3");
  heading.textContent = title;
  const list = document.createElement("ol");
  for (const row of rows) {
    const item = document.createElement("li");
    item.textContent = line(row);
    list.append(item);
  }
  if (!rows.length) list.append(Object.assign(document.createElement("li"), { textContent: "none" }));
  section.append(heading, list);
  return section;
}

function showReport(report) {
  const summary = document.createElement("p");
  summary.textContent = `${report.searches} searches, ${report.sessions} sessions, ` +
    `nothing close ${(100 * report.nothing_close_share).toFixed(1)} %`;
  const count = (row) => `${row.text} (${row.count})`;
  $("#analytics-report").replaceChildren(
    summary,
    analyticsList("Top searches", report.top_queries.slice(0, 10), count),
    analyticsList("No results", report.zero_result_queries.slice(0, 10), count),
    analyticsList("Nothing close", report.nothing_close_queries.slice(0, 10), count),
    analyticsList("Click-through by position", report.click_through,
      (row) => `#${row.position}: ${(100 * row.rate).toFixed(1)} % of ${row.impressions}`),
    analyticsList("Photos of things the shop does not sell", report.unmet_photos,
      (c) => `${c.searches} searches; nearest: ${(c.nearest[0] || []).map((p) => p[1]).join(", ") || "-"}`),
  );
}

async function loadReport() {
  const key = $("#analytics-key").value.trim();
  try {
    showReport(await api("/analytics/report?days=30", { headers: { "X-API-Key": key } }));
  } catch (error) {
    $("#analytics-report").textContent = `The report could not be loaded: ${error.message}`;
  }
}

$("#analytics-load").addEventListener("click", loadReport);
