"""Search analytics: the query log, its report on a generated click log, and the report command."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from engine.analytics.log import LoggedQuery, QueryLog
from engine.analytics.report import build_report
from engine.analytics.tune import tune
from engine.errors import InvalidQuery, UnknownQuery
from engine.settings import Settings
from engine.signals import RankerWeights
from snapshop.cli import app
from tests.clicklog import generate


@pytest.fixture()
def click_log(tmp_path):
    with QueryLog(tmp_path / "analytics.sqlite") as log:
        expected = generate(log)
        yield log, expected


def test_the_report_counts_what_the_generated_log_holds(click_log):
    log, expected = click_log
    report = build_report(log)
    wanted = {**expected.texts, **expected.zero_result, **expected.nothing_close}
    assert {row.text: row.count for row in report.top_queries} == wanted  # "RED DRESS" counts as "red dress"
    assert [row.count for row in report.top_queries] == sorted(wanted.values(), reverse=True)
    assert {row.text: row.count for row in report.zero_result_queries} == expected.zero_result
    assert {row.text: row.count for row in report.nothing_close_queries} == {
        **expected.zero_result, **expected.nothing_close}  # no result is nothing close too
    assert report.events == {"click": 120, "purchase": 12}
    assert report.sessions == 120


def test_click_through_by_position_is_clicks_over_impressions(click_log):
    log, expected = click_log
    rates = {row.position: row for row in build_report(log).click_through}
    for position in range(1, 11):
        assert rates[position].impressions == expected.shown_at[position]
        assert rates[position].clicks == expected.clicks_at.get(position, 0)
        assert rates[position].rate == pytest.approx(expected.clicks_at.get(position, 0) / expected.shown_at[position],
                                                     abs=1e-4)


def test_unmet_photo_searches_cluster_by_what_they_show(click_log):
    log, expected = click_log
    asked = []

    def nearest(vector):
        asked.append(vector)
        return [("p0-1", "Closest thing we sell")]

    clusters = build_report(log, clusters=2, nearest=nearest).unmet_photos
    assert [cluster.searches for cluster in clusters] == expected.photo_groups
    for cluster, group in zip(clusters, ("0-", "1-")):  # the larger group was made from direction 0
        assert len(cluster.examples) == 3 and all(example.startswith(group) for example in cluster.examples)
        assert cluster.nearest == [[("p0-1", "Closest thing we sell")]] * 3
    assert len(asked) == 6


def test_old_searches_and_events_are_dropped_after_the_retention_period(tmp_path):
    path = tmp_path / "analytics.sqlite"
    with QueryLog(path, retention_days=30) as log:
        old = LoggedQuery("text", "old", {}, ["a"], [{}], False, 5.0, at=time.time() - 31 * 86400)
        new = LoggedQuery("text", "new", {}, ["a"], [{}], False, 5.0)
        log.record_query(old)
        log.record_query(new)
        log.record_event(old.id, "a", "click", at=old.at)
        log.record_event(new.id, "a", "click")
    with QueryLog(path, retention_days=30) as log:  # opening purges
        assert [q.text for q in log.queries()] == ["new"]
        assert [e.query_id for e in log.events()] == [new.id]


def test_events_must_name_a_logged_search_and_one_of_its_results(tmp_path):
    with QueryLog(tmp_path / "analytics.sqlite") as log:
        query = LoggedQuery("text", "shirt", {}, ["a", "b"], [{}, {}], False, 5.0)
        log.record_query(query)
        assert log.record_event(query.id, "b", "add_to_cart").position == 2
        with pytest.raises(UnknownQuery, match="no logged search with query_id 'nope'"):
            log.record_event("nope", "a", "click")
        with pytest.raises(InvalidQuery, match="product 'z' was not among the results"):
            log.record_event(query.id, "z", "click")
        with pytest.raises(InvalidQuery, match="unknown event kind 'like'"):
            log.record_event(query.id, "a", "like")


def test_the_report_command_prints_the_generated_logs_report(click_log):
    log, expected = click_log
    result = CliRunner().invoke(app, ["report", "--log", str(log.path), "--no-nearest", "--json", "--clusters", "2"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["searches"] == 120 + 20 + 30 + 40
    assert [c["searches"] for c in body["unmet_photos"]] == expected.photo_groups
    text = CliRunner().invoke(app, ["report", "--log", str(log.path), "--no-nearest"])
    assert text.exit_code == 0 and "vintage typewriter" in text.output and "click-through by position" in text.output


def test_the_report_command_says_when_there_is_no_log(tmp_path):
    result = CliRunner().invoke(app, ["report", "--log", str(tmp_path / "none.sqlite"), "--no-nearest"])
    assert result.exit_code == 2
    assert "no query log at" in result.output


# --- learning weights from clicks -------------------------------------------------------------------
def test_tune_learns_that_shoppers_follow_the_words(tmp_path):
    with QueryLog(tmp_path / "analytics.sqlite") as log:
        generate(log, sessions=300)
        result = tune(log, RankerWeights())
    assert result.held_back_searches >= 30 and result.train_searches >= 200
    # The hidden ranker of the generated shoppers weighs BM25 and the sentence most.
    assert result.after["bm25"] > result.before["bm25"] and result.after["text"] > result.before["text"]
    assert result.after["bm25"] > max(result.after[n] for n in ("image", "caption", "category"))
    assert result.held_back_mrr_after > result.held_back_mrr_before + 0.2
    # Signals the log never saw keep their weights.
    assert result.after["look"] == result.before["look"] and result.after["personal"] == result.before["personal"]


def test_tune_refuses_a_log_with_too_few_chosen_results(tmp_path):
    with QueryLog(tmp_path / "analytics.sqlite") as log:
        generate(log, sessions=10)
        with pytest.raises(InvalidQuery, match="10 searches with a click.*at least 20"):
            tune(log, RankerWeights())


def test_the_tune_command_writes_settings_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("SNAPSHOP_SEARCH__WEIGHTS", raising=False)
    path = tmp_path / "analytics.sqlite"
    with QueryLog(path) as log:
        generate(log, sessions=300)
    env = tmp_path / "shop.env"
    env.write_text("SNAPSHOP_STORE__PATH=/srv/store\n")
    shown = CliRunner().invoke(app, ["tune", "--log", str(path), "--env-file", str(env)])
    assert shown.exit_code == 0, shown.output
    assert "held back" in shown.output and env.read_text() == "SNAPSHOP_STORE__PATH=/srv/store\n"
    written = CliRunner().invoke(app, ["tune", "--log", str(path), "--env-file", str(env), "--write", "--json"])
    assert written.exit_code == 0, written.output
    fitted = json.loads(written.output.split("\nwrote ")[0])["after"]
    settings = Settings(_env_file=env)
    assert str(settings.store.path) == "/srv/store"  # the other line is kept
    assert settings.search.weights["bm25"] == pytest.approx(fitted["bm25"])
    assert RankerWeights(**settings.search.weights).bm25 == pytest.approx(fitted["bm25"])
