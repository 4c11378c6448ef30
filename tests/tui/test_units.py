"""The TUI's pure parts: formatting, thresholds, filters, the saved login, the
command line, error messages. No app, no server."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone

import pytest
from rich.text import Text

import malti_sdk
from malti_tui.cli import settings_from_args
from malti_tui.config import CONFIG_FILE_NAME, forget_credentials, load_saved, normalise_url, save_credentials
from malti_tui.data import (
    AuthFailed,
    BadQuery,
    Bucket,
    Filters,
    RateLimited,
    ServerUnavailable,
    to_dashboard,
    to_dimensions,
    translate_error,
)
from malti_tui.formatting import (
    bar,
    clean,
    format_count,
    format_latency,
    format_percent,
    level_for,
    safe_text,
    status_label,
    worst,
)
from malti_tui.timeranges import TIME_RANGES, get_range
from malti_tui.widgets.charts import count_ticks, thin, time_labels
from malti_tui.widgets.empty_state import EMPTY_HINT
from malti_tui.widgets.tables import fit_widths, status_codes


# ---------------------------------------------------------------- formatting

def test_control_characters_and_escape_sequences_are_removed():
    assert clean("\x1b[31mred\x1b[0m\nline\x07") == "[31mred[0mline"


def test_bidi_controls_and_zero_width_characters_are_removed():
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    invisible = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u2028\u2029\U000e0041"
    assert clean(f"/a{bidi}b{invisible}c") == "/abc"
    assert clean("caf\u00e9 /\u00fcber \u65e5\u672c") == "caf\u00e9 /\u00fcber \u65e5\u672c"  # visible text stays


def test_status_codes_from_the_data_are_cleaned():
    assert status_label("2\x1b[2J00") == "2[2"
    assert status_label("\u202e500") == "500"
    text = status_codes({"4\x1b]0;x\x0704": 3, "200": 5}, lambda level: "")
    assert "\x1b" not in text.plain and "\x07" not in text.plain


def test_safe_text_keeps_markup_literally():
    text = safe_text("[bold red]x[/]")
    assert isinstance(text, Text) and text.plain == "[bold red]x[/]" and not text.spans


def test_long_text_is_cut_with_an_ellipsis():
    assert clean("a" * 300, 10) == "a" * 9 + "…"


@pytest.mark.parametrize(("value", "shown"), [
    (0.731, "0.73 ms"), (12.54, "12.5 ms"), (340.2, "340 ms"), (1250, "1.25 s"), (None, "–"),
])
def test_latency_format(value, shown):
    assert format_latency(value) == shown


def test_counts_and_percentages():
    assert format_count(1234567) == "1,234,567"
    assert format_count(123_456_789) == "123.5M"
    assert format_percent(13.0434) == "13.04%"
    assert format_percent(0) == "0%"
    assert format_percent(0.001) == "<0.01%"


def test_levels_follow_the_thresholds():
    assert [level_for(v, 300, 800) for v in (300, 301, 800, 801, None)] == ["success", "warning", "warning", "error", "neutral"]
    assert worst("success", "error", "warning") == "error"


def test_bar_is_proportional_and_fixed_width():
    assert bar(10, 10, 5) == "█████"
    assert bar(0, 10, 5) == "     "
    assert len(bar(3, 10, 7)) == 7
    assert bar(1, 1000, 4).strip()  # any traffic is visible


# ---------------------------------------------------------------- time ranges and filters

def test_every_range_has_its_own_key_and_slower_refresh_for_longer_ranges():
    keys = [r.key for r in TIME_RANGES]
    assert len(set(keys)) == len(keys) == 8
    refresh = [r.refresh_seconds for r in TIME_RANGES]
    assert refresh == sorted(refresh)
    assert get_range("1h").realtime and not get_range("7d").realtime
    with pytest.raises(ValueError, match="1h, 6h"):
        get_range("2w")


def test_choosing_another_service_clears_the_node():
    filters = Filters(service="auth-service", node="node-1")
    assert filters.with_value("service", "user-service") == Filters(service="user-service")
    assert filters.with_value("consumer", "web").active() == {"service": "auth-service", "node": "node-1", "consumer": "web"}
    assert filters.with_value("node", None).active() == {"service": "auth-service"}
    with pytest.raises(ValueError):
        filters.with_value("colour", "red")


# ---------------------------------------------------------------- conversion of client results

def test_dashboard_from_the_api_json():
    dashboard = to_dashboard({
        "time_series": [{"bucket": "2026-11-23T10:00:00Z", "total_requests": 3, "error_count": 1,
                         "avg_latency": None}],
        "metrics_summary": {"total_requests": 3, "error_count": 1, "error_rate": 33.3, "requests_per_minute": None},
        "endpoints": [], "consumers": [],
        "status_distribution": [{"service": "a", "total_requests": 3, "status_breakdown": {200: 2, 500: 1}}],
        "distinct_nodes": [], "distinct_contexts": [],
    })
    assert dashboard.time_series[0].bucket == datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    assert dashboard.summary.requests_per_minute == 0.0
    assert dashboard.status_distribution[0].status_breakdown == {"200": 2, "500": 1}


def test_dimensions_from_the_api_json():
    dims = to_dimensions({"services": ["a"], "nodes": [], "methods": ["GET"], "consumers": [], "contexts": [],
                          "endpoints": [{"endpoint": "/x", "method": "GET", "service": "a"}]})
    assert dims.endpoints[0].endpoint == "/x" and dims.services == ("a",)


# ---------------------------------------------------------------- charts

def _buckets(n: int) -> list[Bucket]:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return [Bucket(start + timedelta(hours=i), total_requests=1, error_count=i % 2, min_latency=1.0,
                   avg_latency=float(i), max_latency=float(i * 2)) for i in range(n)]


def test_thinning_keeps_totals_and_extremes():
    buckets = _buckets(8760)
    thinned = thin(buckets, 100)
    assert len(thinned) <= 100
    assert sum(b.total_requests for b in thinned) == 8760
    assert sum(b.error_count for b in thinned) == 4380
    assert max(b.max_latency for b in thinned) == 8759 * 2


def test_time_labels_use_dates_for_long_series():
    _, labels = time_labels([b.bucket for b in _buckets(24 * 7)], 4)
    assert labels[0] == "01-01"
    _, labels = time_labels([b.bucket for b in _buckets(6)], 3)
    assert labels[0] == "00:00"


def test_time_labels_never_repeat_a_date():
    # 7 days of hourly buckets on a wide chart: more ticks asked for than days.
    moments = [datetime(2026, 11, 21, 13, tzinfo=timezone.utc) + timedelta(hours=i) for i in range(24 * 7)]
    for ticks in (4, 8, 13, 20):
        positions, labels = time_labels(moments, ticks)
        assert len(labels) == len(set(labels)) == len(positions) >= 2
    # Missing buckets (the series need not be evenly spaced) do not repeat labels either.
    gappy = moments[:10] + moments[100:]
    _, labels = time_labels(gappy, 13)
    assert len(labels) == len(set(labels))


def test_time_labels_show_the_year_when_the_series_spans_years():
    year = [datetime(2025, 11, 24, tzinfo=timezone.utc) + timedelta(days=i) for i in range(365)]
    _, labels = time_labels(year, 6)
    assert labels[0] == "2025-11-24" and labels[-1].startswith("2026-")
    month = [datetime(2026, 5, 1, tzinfo=timezone.utc) + timedelta(days=i) for i in range(30)]
    assert time_labels(month, 4)[1][0] == "05-01"


def test_count_ticks_are_round_whole_numbers():
    for maximum, ticks in ((1006, 6), (3, 5), (1, 4), (87_654, 7), (12, 10), (250, 2), (250, 3), (201.2, 4)):
        values = count_ticks(maximum, ticks)
        assert all(isinstance(v, int) for v in values)
        assert values[0] == 0 and len(values) >= 2 and values[-1] <= maximum  # the axis ends at the maximum
        assert len(values) <= max(ticks, 3)
        steps = {b - a for a, b in zip(values, values[1:])}
        assert len(steps) == 1 and str(steps.pop()).strip("0") in ("1", "2", "5")
    assert count_ticks(1006, 6) == [0, 200, 400, 600, 800, 1000]
    assert count_ticks(0, 5) == [0, 1]


# ---------------------------------------------------------------- table widths

def test_text_columns_give_way_so_the_figures_fit():
    natural = {"method": 6, "endpoint": 60, "service": 30, "requests": 18, "p95": 7}
    flex = {"endpoint": (10, 24, 60), "service": (6, 12, 30)}
    # Room enough: natural widths.
    assert fit_widths(natural, flex, 200) == (natural, 0)
    # Less room: the widest text column narrows first, figures keep their width.
    widths, missing = fit_widths(natural, flex, 100)
    assert missing == 0 and sum(widths.values()) == 100
    assert (widths["endpoint"], widths["service"], widths["requests"]) == (40, 29, 18)
    # Not below the preferred widths unless asked; then not below the least.
    widths, missing = fit_widths(natural, flex, 50)
    assert (widths["endpoint"], widths["service"], missing) == (24, 12, 17)
    widths, missing = fit_widths(natural, flex, 50, least=True)
    assert missing == 0 and sum(widths.values()) == 50 and widths["endpoint"] >= 10 and widths["service"] >= 6
    assert fit_widths(natural, flex, 40, least=True)[1] == 7
    # Size unknown: only capped at the most.
    assert fit_widths({"endpoint": 90}, flex, None) == ({"endpoint": 60}, 0)


# ---------------------------------------------------------------- empty state

def test_the_empty_state_does_not_send_users_to_the_unrelated_pypi_package():
    import re

    assert re.search(r"pip install malti(?![-\w/])", EMPTY_HINT) is None
    assert "malti-stack" in EMPTY_HINT and "MaltiMiddleware" in EMPTY_HINT


# ---------------------------------------------------------------- saved login and command line

def test_saved_login_is_private_and_round_trips(tmp_path):
    path = save_credentials(tmp_path / "malti", "http://h:1", "secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_saved(tmp_path / "malti") == ("http://h:1", "secret")
    forget_credentials(tmp_path / "malti")
    assert load_saved(tmp_path / "malti") == (None, None)


def test_an_existing_file_is_tightened_to_0600(tmp_path):
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text("{}")
    path.chmod(0o644)
    save_credentials(tmp_path, "http://h", "k")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_broken_saved_file_counts_as_absent(tmp_path):
    (tmp_path / CONFIG_FILE_NAME).write_text("not json")
    assert load_saved(tmp_path) == (None, None)


def test_command_line_beats_the_environment():
    env = {"MALTI_URL": "http://env:1", "MALTI_USER_KEY": "env-key"}
    assert settings_from_args(["--url", "cli:2", "--api-key", "cli-key"], env).url == "http://cli:2"
    settings = settings_from_args([], env)
    assert (settings.url, settings.api_key) == ("http://env:1", "env-key")
    settings = settings_from_args(["--range", "7d", "--light", "--no-refresh"], {})
    assert (settings.url, settings.time_range, settings.theme, settings.auto_refresh) == (None, "7d", "malti-light", False)


def test_an_unknown_range_on_the_command_line_is_refused(capsys):
    with pytest.raises(SystemExit):
        settings_from_args(["--range", "2w"], {})
    assert "invalid choice" in capsys.readouterr().err


def test_url_normalisation():
    assert normalise_url(" localhost:8000/ ") == "http://localhost:8000"
    assert normalise_url("https://x.example") == "https://x.example"


# ---------------------------------------------------------------- errors a user can act on

@pytest.mark.parametrize(("error", "kind", "words"), [
    (malti_sdk.MaltiConnectionError("refused"), ServerUnavailable, "Cannot reach"),
    (malti_sdk.MaltiTimeoutError("slow"), ServerUnavailable, "timed out"),
    (malti_sdk.MaltiAuthError(401, "Invalid API key"), AuthFailed, "refused the API key"),
    (malti_sdk.MaltiAuthError(403, "service key"), AuthFailed, "user key"),
    (malti_sdk.MaltiRateLimitError(429, "slow down", retry_after=7), RateLimited, "Rate limited"),
    (malti_sdk.MaltiServerError(503, "database unavailable", retry_after=2), ServerUnavailable, "503"),
    (malti_sdk.MaltiValidationError(422, "bad"), BadQuery, "refused the query"),
    (malti_sdk.MaltiNotFoundError(404, "Not Found"), BadQuery, "Check the server URL"),
])
def test_client_errors_become_clear_messages(error, kind, words):
    translated = translate_error(error, "http://h:1")
    assert isinstance(translated, kind) and words in str(translated)


def test_retry_after_is_kept():
    assert translate_error(malti_sdk.MaltiRateLimitError(429, "x", retry_after=7), "u").retry_after == 7
    assert translate_error(malti_sdk.MaltiServerError(503, "x", retry_after=2), "u").retry_after == 2


def test_cli_without_the_tui_extra_says_what_to_install():
    import subprocess
    import sys

    code = "import sys; sys.modules['textual'] = None; from malti_tui.cli import main; sys.exit(main([]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "needs the [tui] extra (textual is missing)" in done.stderr and "Traceback" not in done.stderr
