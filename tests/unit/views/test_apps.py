"""``hypertail metrics`` and ``hypertail workflows`` as text: every kind says what matters, nothing is
cut, and no line passes the width unless one cell alone is wider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.views.apps import fmt_age, fmt_number, metrics_json, render_metrics, render_workflows, workflows_json
from agent.views.model import MetricSeries, WorkflowList, WorkflowView

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def series(name: str, kind: str, **kw: object) -> MetricSeries:
    base: dict[str, object] = {"attributes": {}, "rows": 3, "count": 10, "first": T, "last_at": T + timedelta(60)}
    base.update(kw)
    return MetricSeries(name=name, kind=kind, **base)  # type: ignore[arg-type]


SERIES = [
    series("cache.hits", "counter", attributes={"route": "/q", "method": "GET"}, total=1234.0, rate=2.5),
    series("queue.depth", "gauge", last=17.0, low=3.0, high=20.0),
    series("http.server.request.duration.milliseconds.by.route.and.status", "histogram",
           attributes={"route": "/api/v1/documents/{id}/chunks", "status": 200}, count=812, total=9000.5,
           low=1.0, high=130.0, p50=12.125, p95=40.2, p99=88.0),
    series("otel.requests", "counter", total=None, last=190.0),
]


@pytest.mark.parametrize("width", [80, 60, 120])
def test_metrics_table_fits_and_keeps_every_value(width: int) -> None:
    lines = render_metrics(SERIES, width)
    text = "\n".join(lines)
    assert lines[0].split() == ["SERIES", "KIND", "VALUE"]
    assert "cache.hits{method=GET,route=/q}" in text and "1234 (2.5/s)" in text
    assert "17 (min 3, max 20)" in text and "190 (cumulative)" in text
    assert "n=812 p50=12.12 p95=40.2 p99=88" in text
    assert "…" not in text and "..." not in text
    long = ("http.server.request.duration.milliseconds.by.route.and.status"
            "{route=/api/v1/documents/{id}/chunks,status=200}")
    assert long in lines  # alone on its line, its values on the next
    assert all(len(line) <= width or line == long for line in lines), [x for x in lines if len(x) > width]


def test_workflows_table_counts_states_and_marks_inconsistent_ones() -> None:
    def wf(wid: str, state: str, age: int, consistent: bool = True) -> WorkflowView:
        return WorkflowView(workflow_id=wid, workflow_type="document", state=state, since=T,
                            time_in_state=timedelta(seconds=age), started_at=T, transitions=3, consistent=consistent,
                            trace_id=None, history=({"state": state},))
    wl = WorkflowList({"done": 97, "running": 3}, (wf("doc-1", "done", 30), wf("doc-2", "running", 7500, False)))
    lines = render_workflows(wl, 80)
    assert lines[:3] == ["STATE    WORKFLOWS", "done     97", "running  3"]
    assert any(line.split() == ["doc-2", "document", "running", "*", "2h05m", "3"] for line in lines)
    assert "(2 of 100 shown; --limit, --state or --type for others)" in lines
    assert lines[-1].startswith("* a transition's from_state differs")
    assert all(len(line) <= 80 for line in lines[:-1])
    data = workflows_json(wl)
    assert data["per_state"] == {"done": 97, "running": 3} and data["workflows"][1]["seconds_in_state"] == 7500


def test_numbers_and_ages_read_well() -> None:
    assert [fmt_number(v) for v in (None, 3.0, 1234, 0.000123456, 2.5e20, -7.25)] == [
        "-", "3", "1234", "0.0001235", "2.5e+20", "-7.25"]
    assert [fmt_age(timedelta(seconds=s)) for s in (5, 125, 7500, 200_000)] == ["5s", "2m05s", "2h05m", "2d07h"]


def test_metrics_json_has_every_field() -> None:
    (counter,) = metrics_json(SERIES[:1])
    assert counter["total"] == 1234.0 and counter["rate_per_s"] == 2.5
    assert counter["first"] == "2026-11-01T12:00:00.000000+00:00"
    assert counter["attributes"] == {"route": "/q", "method": "GET"}
