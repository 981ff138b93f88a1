"""``report.html``: one self-contained page (plots embedded as data URIs, inline CSS, no script, no network) that a
person opens in any browser: the verdict, the targets table, the plots, the triage and the example calls."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from html import escape
from typing import Any

import pandas as pd

from reports.groups import groups_table
from reports.metrics import fault_windows
from reports.model import FAIL, NOT_MEASURED, PASS, TRACKED, Plot, RunData, TargetRow
from reports.triage import StackTriage

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1d2330;
padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #d6dae3;padding-bottom:4px}
.verdict{font-size:1.25em;padding:10px 14px;border-radius:6px;margin:12px 0}
.v-pass{background:#e3f5e6;color:#17612a}.v-fail{background:#fde4e4;color:#8d1c1c}
.v-invalid,.v-not_measured{background:#fff2d6;color:#7a5200}
table{border-collapse:collapse;width:100%;font-size:.92em}th,td{border-bottom:1px solid #e4e7ee;padding:5px 8px;
text-align:left;vertical-align:top}th{background:#f4f6fa}td.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85em;font-weight:600;white-space:nowrap}
.b-pass{background:#d7f0dc;color:#17612a}.b-fail{background:#f9d2d2;color:#8d1c1c}
.b-not_measured{background:#ffe9b8;color:#7a5200}.b-tracked{background:#e3e8f2;color:#39465e}
.note{color:#566079;font-size:.9em}.alert{color:#b34700;font-weight:600}.regress{color:#8d1c1c;font-weight:600}
figure{margin:18px 0;border:1px solid #e4e7ee;border-radius:6px;padding:8px}figure img{max-width:100%;height:auto}
figcaption{color:#566079;font-size:.9em}.missing{background:#fff7e6;border-left:4px solid #e0a100;padding:8px 12px}
.stacks{display:grid;grid-template-columns:repeat(auto-fit,minmax(270px,1fr));gap:12px}
.stack{border:1px solid #e4e7ee;border-radius:6px;padding:10px 12px}.stack h3{margin:0 0 6px}
.stack .count{font-size:1.6em;font-weight:700}.ok{color:#17612a}code{background:#f4f6fa;padding:0 3px}
"""


@dataclass
class Extras:
    """What only some reports carry: a baseline comparison and an incident's other side."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    baseline_dir: str | None = None
    incident: dict[str, Any] | None = None  # name, title, checks, sides: {mode: {run_dir, verdict, figures}}
    groups: list[dict[str, Any]] = field(default_factory=list)  # reports.groups.by_group


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        text = f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text}{'' if not unit else unit if unit == '%' else ' ' + unit}"


def _badge(verdict: str) -> str:
    label = {PASS: "pass", FAIL: "FAIL", NOT_MEASURED: "not measured", TRACKED: "tracked"}.get(verdict, verdict)
    return f'<span class="badge b-{escape(verdict)}">{escape(label)}</span>'


def _targets(rows: list[TargetRow], changes: list[dict[str, Any]]) -> str:
    by_change = {c["metric"]: c for c in changes}
    head = ("<tr><th>group</th><th>metric</th><th>target</th><th>alert at</th><th>measured</th><th>verdict</th>"
            + ("<th>baseline</th><th>change</th>" if changes else "") + "<th>how it was measured</th></tr>")
    body = []
    for row in rows:
        cells = [escape(row.group), f"{escape(row.title)}<br><code>{escape(row.metric)}</code>",
                 escape(row.target), escape(row.alert or "–")]
        measured = _fmt(row.measured, row.unit)
        if row.alerting:
            measured = f'<span class="alert" title="past the alert threshold">{measured} ⚠</span>'
        cells += [measured, _badge(row.verdict)]
        if changes:
            change = by_change.get(row.metric)
            if change is None:
                cells += ["–", "–"]
            else:
                delta = change.get("absolute")
                text = "–" if delta is None else f"{delta:+.4g}"
                if change.get("regression"):
                    text = f'<span class="regress">{text} regression</span>'
                cells += [_fmt(change.get("baseline"), row.unit), text]
        cells.append(f'<span class="note">{escape(row.note)}</span>')
        classes = ["", "", "", "", "num", "", *(["num", "num"] if changes else []), ""]
        body.append("<tr>" + "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>"
                                     for c, v in zip(classes, cells, strict=True)) + "</tr>")
    return f'<table id="targets">{head}{"".join(body)}</table>'


def _plots(plots: list[Plot]) -> str:
    out = []
    for plot in plots:
        if plot.png:
            data = base64.b64encode(plot.png).decode("ascii")
            out.append(f'<figure><img alt="{escape(plot.title)}" src="data:image/png;base64,{data}">'
                       f"<figcaption><b>{escape(plot.title)}</b>. {escape(plot.caption)}</figcaption></figure>")
        else:
            out.append(f'<figure class="missing"><b>{escape(plot.title)}</b>: {escape(plot.caption)}</figure>')
    return "".join(out)


def _triage(stacks: list[StackTriage]) -> str:
    cards = []
    for entry in stacks:
        symptoms = "".join(f"<li>{escape(k)}: {v}</li>" for k, v in sorted(entry.symptoms.items(),
                                                                          key=lambda kv: -kv[1]))
        examples = "".join(
            f'<li><a href="#call-{e.call_id}">call {e.call_id}</a>'
            f"{'' if e.turn_index is None else f', turn {e.turn_index}'}: {escape(e.symptom)}: {escape(e.detail)}"
            f"{'' if e.event_line is None else f' <span class=note>(events.jsonl line {e.event_line})</span>'}</li>"
            for e in entry.examples)
        evidence = "".join(f"<li>{escape(x)}</li>" for x in entry.evidence)
        steps = "".join(f"<li>{escape(x)}</li>" for x in entry.debug_steps)
        count = (f'<div class="count">{entry.failures}</div><div>failures in {entry.calls} call(s)</div>'
                 if entry.failures else '<div class="count ok">0</div><div>no failure routed here</div>')
        cards.append(f'<div class="stack"><h3>{escape(entry.stack)}</h3>{count}'
                     + (f"<p><b>Symptoms</b></p><ul>{symptoms}</ul>" if symptoms else "")
                     + (f"<p><b>Examples</b></p><ul>{examples}</ul>" if examples else "")
                     + (f"<p><b>Runtime evidence</b></p><ul>{evidence}</ul>" if evidence else "")
                     + (f"<details><summary>Debug steps</summary><ol>{steps}</ol></details>"
                        if entry.failures else "") + "</div>")
    return f'<div class="stacks" id="triage">{"".join(cards)}</div>'


def _example_calls(data: RunData, stacks: list[StackTriage]) -> str:
    ids = sorted({e.call_id for s in stacks for e in s.examples})
    if not ids:
        return "<p>No failed call to show.</p>"
    calls = data.calls.set_index("call_id")
    turns = data.turns[data.turns["call_id"].isin(ids)]
    out = []
    for call_id in ids:
        call = calls.loc[call_id] if call_id in calls.index else None
        if isinstance(call, pd.DataFrame):
            call = call.iloc[0]
        rows = "".join(
            f"<tr><td>{t['index']}</td><td>{escape(str(t['kind']))}</td><td>{escape(str(t['status']))}</td>"
            f"<td class=num>{_fmt(t['at_s'], 's')}</td><td class=num>{_fmt(t['response_latency_ms'], 'ms')}</td>"
            f"<td class=num>{_fmt(t['max_gap_ms'], 'ms')}</td><td class=num>{t['heard']}/{t['undecodable']}</td>"
            f"<td>{escape(str(t['caller_text'] or ''))}</td></tr>"
            for _, t in turns[turns["call_id"] == call_id].sort_values("index").iterrows())
        head = "(no record)" if call is None else (
            f"{escape(str(call['outcome']))}: {escape(str(call['reason']))}; started at "
            f"{_fmt(call['start_s'], 's')}, lasted {_fmt(call['duration_s'], 's')}; sid "
            f"<code>{escape(str(call['call_sid']))}</code>; events.jsonl line {call['event_line']}")
        out.append(f'<h3 id="call-{call_id}">Call {call_id}</h3><p>{head}</p><table><tr><th>turn</th><th>kind</th>'
                   "<th>status</th><th>at</th><th>latency</th><th>longest gap</th><th>heard/garbled</th>"
                   f"<th>the caller said</th></tr>{rows}</table>")
    return "".join(out)


def _faults(data: RunData) -> str:
    if not data.faults:
        return "<p>No fault was injected in this run.</p>"
    rows = "".join(
        f"<tr><td>{escape(f['label'])}</td><td>{escape(f['target'])}</td><td class=num>{_fmt(f['start_s'], 's')}</td>"
        f"<td class=num>{_fmt(f['end_s'], 's') if f['end_s'] is not None else 'until the end'}</td>"
        f"<td class=num>{f['calls_started']}</td><td class=num>{_fmt(f['availability'])}</td>"
        f"<td>{escape(error or '')}</td></tr>"
        for f, error in zip(fault_windows(data), (w.error for w in data.faults), strict=True))
    return ("<table id=faults><tr><th>fault</th><th>dependency</th><th>applied</th><th>removed</th>"
            "<th>calls started in it</th><th>worker availability in it</th><th>error</th></tr>"
            f"{rows}</table><p class=note>Seconds after the load started; shaded in every plot.</p>")


def _incident(incident: dict[str, Any]) -> str:
    sides = incident.get("sides", {})
    modes = [m for m in ("broken", "fixed") if m in sides]
    head = "".join(f"<th>{m} must</th><th>{m} measured</th>" for m in modes)
    rows = []
    for check in incident.get("checks", []):
        cells = []
        for mode in modes:
            side = sides[mode]
            value = side.get("figures", {}).get(check["metric"])
            held = side.get("checks", {}).get(check["metric"])
            mark = "" if held is None else (" ✓" if held else " ✗")
            cells += [escape(check.get(mode) or "–"), f"{_fmt(value)}{mark}"]
        rows.append(f"<tr><td><code>{escape(check['metric'])}</code></td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    links = " · ".join(f'{m}: <a href="../{escape(sides[m]["run_dir"].rstrip("/").split("/")[-1])}/report.html">'
                       f'{escape(sides[m]["run_dir"])}</a> ({escape(str(sides[m].get("verdict")))})' for m in modes)
    return (f"<p><b>{escape(incident.get('name', ''))}</b>: {escape(incident.get('title', ''))}</p>"
            f'<table id="incident"><tr><th>metric</th>{head}</tr>{"".join(rows)}</table><p>{links}</p>')


def render(data: RunData, rows: list[TargetRow], verdict: str, reason: str, stacks: list[StackTriage],
           plots: list[Plot], extras: Extras | None = None) -> str:
    extras = extras or Extras()
    counts = {v: sum(1 for r in rows if r.verdict == v) for v in (PASS, FAIL, NOT_MEASURED, TRACKED)}
    calls = len(data.calls)
    outcomes = data.calls["outcome"].value_counts().to_dict() if calls else {}
    missing = "".join(f"<li>{escape(m)}</li>" for m in data.missing)
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>voicechaos report: {escape(data.name)}</title>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>",
        f"<h1>voicechaos report: {escape(data.name)}</h1>",
        f"<p class=note>Run folder <code>{escape(str(data.run_dir))}</code>; {calls} calls "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items())) or 'none'}); load lasted "
        f"{_fmt(data.duration_s, 's')}; report written {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>",
        f'<div class="verdict v-{escape(verdict)}" id="verdict"><b>{escape(verdict.upper())}</b>: {escape(reason)}'
        f"</div>",
        f"<p>{counts[PASS]} targets held, {counts[FAIL]} missed, {counts[NOT_MEASURED]} could not be measured, "
        f"{counts[TRACKED]} tracked without a target. A target that could not be measured never counts as held.</p>",
    ]
    if missing:
        parts.append(f'<div class="missing"><b>What this report could not read</b><ul>{missing}</ul></div>')
    if extras.incident:
        parts.append(f"<h2>Incident: broken against fixed</h2>{_incident(extras.incident)}")
    parts.append("<h2>Targets</h2>")
    if extras.baseline_dir:
        regressions = [c["metric"] for c in extras.changes if c.get("regression")]
        parts.append(f"<p>Compared with the baseline <code>{escape(extras.baseline_dir)}</code>: "
                     + (f'<span class="regress">{len(regressions)} regression(s): {escape(", ".join(regressions))}'
                        "</span>" if regressions else "no regression") + ".</p>")
    parts.append(_targets(rows, extras.changes))
    parts.append(f"<h2>Callers by group</h2>{groups_table(extras.groups)}")
    parts.append(f"<h2>Faults</h2>{_faults(data)}")
    parts.append(f"<h2>Plots</h2>{_plots(plots)}")
    parts.append("<h2>Triage: where the failures come from</h2><p>Every failed call and failed turn, routed by the "
                 "symptom the callers measured to one of the four stacks.</p>" + _triage(stacks))
    parts.append(f"<h2>Example calls</h2>{_example_calls(data, stacks)}")
    parts.append("<h2>Files</h2><p class=note><code>events.jsonl</code> (every event, one JSON per line), "
                 "<code>summary.json</code> (every metric and verdict), <code>junit.xml</code> (one test per target),"
                 " <code>runtime_metrics.jsonl</code> (the runtime's /metrics every 5 s), <code>records/</code> (the "
                 "call records as Parquet), <code>stack/</code> (logs). The format: reports/RUN_FOLDER.md.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
