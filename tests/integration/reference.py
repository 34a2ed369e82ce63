"""An independent reference for user_stats, computed from the raw events in plain Python.

It shares no code with the job or the assembly function: it buckets events by
hour and counts sliding windows straight from event times.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from datetime import datetime

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def is_mobile_click(e) -> bool:
    return e["event_type"] == "click" and e.get("device") == "mobile"


def tiles(events) -> dict[tuple[str, int], tuple[int, int, int, int]]:
    """(user, hour start ms) -> (events, impressions, clicks, mobile clicks)."""
    acc: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for e in events:
        t = ms(e["event_time"])
        row = acc[(e["user_id"], t - t % HOUR_MS)]
        row[0] += 1
        row[1] += e["event_type"] == "impression"
        row[2] += e["event_type"] == "click"
        row[3] += is_mobile_click(e)
    return {k: tuple(v) for k, v in acc.items()}


class Windows:
    """Sliding-window counts over raw event times: events with end - W <= t < end."""

    def __init__(self, events) -> None:
        times: dict[tuple[str, str], list[int]] = defaultdict(list)
        for e in events:
            times[(e["user_id"], e["event_type"])].append(ms(e["event_time"]))
            if is_mobile_click(e):
                times[(e["user_id"], "mobile_click")].append(ms(e["event_time"]))
        self._times = {k: sorted(v) for k, v in times.items()}

    def between(self, user: str, event_type: str, low_ms: int, high_ms: int) -> int:
        times = self._times.get((user, event_type), [])
        return bisect_left(times, high_ms) - bisect_left(times, low_ms)

    def expected(
        self, user: str, end_ms: int, head_until_ms: int | None = None
    ) -> dict[str, float | int | None]:
        """Feature values at a tile boundary; None where no event is in the window.

        With ``head_until_ms`` (a time inside the hour starting at ``end_ms``) each
        window also takes the events of ``[end_ms, head_until_ms)``: a read at that
        time, whose window is ``[end - W, t)``.
        """
        high = end_ms if head_until_ms is None else head_until_ms
        out: dict[str, float | int | None] = {}
        for label, size in (("1d", DAY_MS), ("7d", 7 * DAY_MS)):
            imps = self.between(user, "impression", end_ms - size, high)
            clicks = self.between(user, "click", end_ms - size, high)
            seen = imps + clicks > 0
            out[f"impressions_{label}"] = imps if seen else None
            out[f"clicks_{label}"] = clicks if seen else None
            mobile = self.between(user, "mobile_click", end_ms - size, high)
            out[f"mobile_clicks_{label}"] = mobile if seen else None
        imps7, clicks7, mobile7 = out["impressions_7d"], out["clicks_7d"], out["mobile_clicks_7d"]
        if imps7 is None or clicks7 is None or mobile7 is None:
            out["click_rate_7d"] = out["mobile_click_share_7d"] = None
        else:
            out["click_rate_7d"] = 0.0 if imps7 == 0 else clicks7 / imps7
            out["mobile_click_share_7d"] = 0.0 if clicks7 == 0 else mobile7 / clicks7
        return out
