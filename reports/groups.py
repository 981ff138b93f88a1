"""The callers' measurements per caller group (and so per transport), side by side: the same targets, measured the
same way, for the phone callers and the WebRTC callers of one run."""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from reports.model import RunData


def _p(values: pd.Series, q: float) -> float | None:
    values = values.dropna()
    return round(float(values.quantile(q / 100)), 1) if len(values) else None


def by_group(data: RunData) -> list[dict[str, Any]]:
    calls, turns = data.calls, data.turns
    if not len(calls):
        return []
    group_of = dict(zip(calls["call_id"], calls["group"], strict=True))
    turns = turns.assign(group=turns["call_id"].map(group_of)) if len(turns) else turns.assign(group=[])
    out = []
    for name, members in calls.groupby("group", sort=True):
        mine = turns[turns["group"] == name]
        replies = mine[mine["kind"] == "reply"]["response_latency_ms"]
        heard = mine[mine["first_audio"]]
        symbols, clear = int(mine["audio_symbols"].sum()), int(mine["audio_symbols_clear"].sum())
        decoded, garbled = int(mine["heard"].sum()), int(mine["undecodable"].sum())
        received, lost = members["rtp_packets_received"].sum(), members["rtp_packets_lost"].sum()
        rtp = members["rtp_packets_received"].notna().any()
        out.append({
            "group": str(name),
            "transport": str(members["transport"].iloc[0]),
            "calls": len(members),
            "completed": int((members["outcome"] == "completed").sum()),
            "outcomes": {str(k): int(v) for k, v in members["outcome"].value_counts().sort_index().items()},
            "reply_latency_p50_ms": _p(replies, 50),
            "reply_latency_p95_ms": _p(replies, 95),
            "max_silence_gap_ms": round(float(heard["max_gap_ms"].max()), 1) if len(heard) else None,
            "phrases_decoded": decoded,
            "phrases_undecodable": garbled,
            "audio_quality": round(clear / symbols, 4) if symbols else None,
            "packet_loss_pct": round(100.0 * lost / (received + lost), 2) if rtp and received + lost else None,
            "jitter_p95_ms": _p(members["rtp_jitter_ms"], 95) if rtp else None,
            "concealed_s": round(float(members["concealed_ms"].sum()) / 1000, 2),
        })
    return out


_COLUMNS = (("group", "group"), ("transport", "transport"), ("calls", "calls"), ("completed", "completed"),
            ("reply_latency_p50_ms", "reply p50 ms"), ("reply_latency_p95_ms", "reply p95 ms"),
            ("max_silence_gap_ms", "longest gap ms"), ("phrases_decoded", "phrases decoded"),
            ("phrases_undecodable", "garbled"), ("audio_quality", "audio intact"),
            ("packet_loss_pct", "packet loss %"), ("jitter_p95_ms", "jitter p95 ms"), ("concealed_s", "concealed s"))


def groups_table(groups: list[dict[str, Any]]) -> str:
    if not groups:
        return "<p class=note>No call was placed.</p>"
    head = "".join(f"<th>{escape(title)}</th>" for _, title in _COLUMNS)
    rows = []
    for group in groups:
        cells = "".join(f"<td>{'—' if group[key] is None else escape(str(group[key]))}</td>" for key, _ in _COLUMNS)
        rows.append(f'<tr data-group="{escape(group["group"])}">{cells}</tr>')
    return (f'<table id="groups"><tr>{head}</tr>{"".join(rows)}</table><p class=note>Packet loss and jitter are the '
            "WebRTC receivers' own RTCP figures for the agent's audio (— on Twilio: a websocket over TCP has no "
            "packets to count). Every latency on WebRTC includes both receive paths, as a person's does: the caller's "
            "(about 100 ms: jitter buffer and playout delay) and the agent's own (aiortc's jitter buffer holds 80 "
            "ms).</p>")
