// voicechaos: the Voice & Chaos page. Plain JS, no build step, no network beyond this server.
// It polls api/voice (figures) and api/chaos (faults), and talks to Locust's own /swarm and /stop for load.
// Every value from the server is written with textContent, never as HTML.
"use strict";

(function () {
  var POLL_VOICE_MS = 1500;
  var POLL_CHAOS_MS = 2000;
  var body = document.body;
  var locustBase = body.getAttribute("data-locust-base") || "";
  var hasLocust = body.getAttribute("data-locust") === "yes";
  // ?embed=1: shown inside Locust's own Voice or Chaos tab (locust-tabs.js), which has its own header and load form
  var embedded = new URLSearchParams(location.search).has("embed");
  if (embedded) body.classList.add("embedded");
  var presets = [];

  function $(id) { return document.getElementById(id); }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function ms(value) {
    if (value === null || value === undefined) return "—";
    return (value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(1)) + " ms";
  }

  function seconds(value) {
    return value === null || value === undefined ? "—" : value.toFixed(1) + " s";
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function counts(node, map) {
    clear(node);
    var keys = Object.keys(map || {}).sort(function (a, b) { return map[b] - map[a]; });
    if (!keys.length) { node.appendChild(el("li", "none yet", "muted")); return; }
    keys.forEach(function (k) {
      var li = el("li");
      li.appendChild(el("span", k, "k-" + k.replace(/[^a-z_]/gi, "")));
      li.appendChild(el("b", map[k]));
      node.appendChild(li);
    });
  }

  function rows(tbody, list) {
    clear(tbody);
    list.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("th", r[0]));
      tr.appendChild(el("td", r[1]));
      tr.appendChild(el("td", r[2]));
      tbody.appendChild(tr);
    });
  }

  function request(method, url, payload, form) {
    var options = {method: method, headers: {Accept: "application/json"}};
    if (form) {
      options.body = new URLSearchParams(form);
    } else if (payload !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload);
    }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = {error: text.slice(0, 300)}; }
        if (!response.ok) {
          var err = new Error((data && (data.error || data.message)) || ("HTTP " + response.status));
          err.status = response.status;
          throw err;
        }
        return data;
      });
    });
  }

  // --- tabs -----------------------------------------------------------------------------------------------------

  function showTab() {
    var tab = location.hash === "#chaos" ? "chaos" : "voice";
    $("voice").hidden = tab !== "voice";
    $("chaos").hidden = tab !== "chaos";
    $("tab-voice").classList.toggle("active", tab === "voice");
    $("tab-chaos").classList.toggle("active", tab === "chaos");
    if (tab === "voice") drawChart(lastHistory);
  }

  // --- voice ----------------------------------------------------------------------------------------------------

  var lastHistory = [];
  var lastFaults = [];  // fault windows (times from the run's load start)
  var loadStartT = null;  // the load start on the history's time axis

  function renderVoice(s) {
    var lat = s.response_latency_ms, greet = s.greeting_latency_ms, gaps = s.gaps_ms;
    $("window-label").textContent = "(window: last " + s.window_s + " s)";
    rows($("latency-rows"), [
      ["p50", ms(lat.window.p50), ms(lat.run.p50)],
      ["p95", ms(lat.window.p95), ms(lat.run.p95)],
      ["p99", ms(lat.window.p99), ms(lat.run.p99)],
      ["max", ms(lat.window.max), ms(lat.run.max)],
      ["replies", lat.window.count, lat.run.count],
      ["greeting p95", ms(greet.window.p95), ms(greet.run.p95)]
    ]);
    rows($("gap-rows"), [
      ["p95", ms(gaps.window.p95), ms(gaps.run.p95)],
      ["max", ms(gaps.window.max), ms(gaps.run.max)],
      ["dead air (> " + gaps.dead_air_ms + " ms)", gaps.window.dead_air, gaps.run.dead_air],
      ["gaps", gaps.window.count, gaps.run.count]
    ]);
    $("active-calls").textContent = s.active_calls.total;
    var workers = Object.keys(s.active_calls.by_worker || {});
    $("active-by-worker").textContent = workers.length ? "by worker: " + workers.map(function (w) {
      return w + " " + s.active_calls.by_worker[w];
    }).join(", ") : "";
    $("calls-started").textContent = s.calls.started + " started, " + s.calls.ended + " ended, " +
      s.turns.total + " turns";
    counts($("outcomes"), s.calls.by_outcome);
    counts($("statuses"), s.turns.by_status);
    counts($("reasons"), s.calls.reasons);
    var late = s.lateness;
    $("lateness-p99").textContent = ms(late.p99_ms);
    $("lateness-detail").textContent = "p50 " + ms(late.p50_ms) + ", max " + ms(late.max_ms) + " over " +
      late.frames + " frames from " + late.workers + " worker(s); limit " + late.limit_ms + " ms";
    $("validity").textContent = (s.validity.valid ? "valid: " : "INVALID: ") + s.validity.reason;
    var banner = $("invalid");
    banner.hidden = !!s.validity.valid;
    banner.textContent = s.validity.valid ? "" : "Run invalid: " + s.validity.reason;
    lastHistory = s.history || [];
    loadStartT = s.load_start_t === undefined ? null : s.load_start_t;
    if (!$("voice").hidden) drawChart(lastHistory);
  }

  function drawChart(history) {
    var canvas = $("chart");
    var ctx = canvas.getContext && canvas.getContext("2d");
    if (!ctx) return;
    var width = canvas.clientWidth || canvas.width;
    canvas.width = width;
    var height = canvas.height, left = 56, right = 40, top = 10, bottom = 22;
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#666";
    if (!history.length) { ctx.fillText("no data yet", left, height / 2); return; }
    var t0 = history[0].t, t1 = history[history.length - 1].t;
    var span = Math.max(t1 - t0, 1);
    var maxMs = 1, maxCalls = 1;
    history.forEach(function (p) {
      maxMs = Math.max(maxMs, p.latency_p95_ms || 0, p.max_gap_ms || 0);
      maxCalls = Math.max(maxCalls, p.active_calls || 0);
    });
    function x(t) { return left + (t - t0) / span * (width - left - right); }
    function yMs(v) { return top + (1 - v / maxMs) * (height - top - bottom); }
    function yCalls(v) { return top + (1 - v / maxCalls) * (height - top - bottom); }
    ctx.strokeStyle = "#ddd";
    ctx.beginPath();
    for (var i = 0; i <= 4; i++) {
      var y = top + i / 4 * (height - top - bottom);
      ctx.moveTo(left, y); ctx.lineTo(width - right, y);
      ctx.fillText(Math.round(maxMs * (1 - i / 4)) + " ms", 2, y + 4);
      ctx.fillText(String(Math.round(maxCalls * (1 - i / 4))), width - right + 4, y + 4);
    }
    ctx.stroke();
    shadeFaults(ctx, x, t0, t1, top, height - bottom);
    ctx.fillStyle = "#666";
    ctx.fillText(Math.round(t0) + " s", left, height - 6);
    ctx.fillText(Math.round(t1) + " s", width - right - 30, height - 6);
    function line(key, color, scale) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      var drawing = false;
      history.forEach(function (p) {
        var v = p[key];
        if (v === null || v === undefined) { drawing = false; return; }
        if (drawing) ctx.lineTo(x(p.t), scale(v)); else ctx.moveTo(x(p.t), scale(v));
        drawing = true;
      });
      ctx.stroke();
      ctx.lineWidth = 1;
    }
    line("active_calls", "#9e9e9e", yCalls);
    line("max_gap_ms", "#ef6c00", yMs);
    line("latency_p95_ms", "#1565c0", yMs);
  }

  // each fault window of the run as a band over the time it was applied (ongoing ones up to now), labelled
  function shadeFaults(ctx, x, t0, t1, yTop, yBottom) {
    if (loadStartT === null) return;
    lastFaults.forEach(function (w) {
      if (w.applied_at_s === null || w.applied_at_s === undefined) return;
      var from = Math.max(t0, loadStartT + w.applied_at_s);
      var to = Math.min(t1, w.removed_at_s === null || w.removed_at_s === undefined ? t1 : loadStartT + w.removed_at_s);
      if (to < from) return;  // ended before the history's first point
      ctx.fillStyle = "rgba(239, 108, 0, 0.12)";
      ctx.fillRect(x(from), yTop, Math.max(2, x(to) - x(from)), yBottom - yTop);
      ctx.fillStyle = "#b45309";
      ctx.fillText("#" + w.index + " " + (w.label || w.action || ""), x(from) + 3, yTop + 12);
    });
  }

  function pollVoice() {
    request("GET", "api/voice").then(function (s) {
      renderVoice(s);
      $("status").textContent = "updated " + new Date().toLocaleTimeString();
      $("status").className = "status";
    }).catch(function (e) {
      $("status").textContent = "figures unavailable: " + e.message;
      $("status").className = "status error";
    }).then(function () { setTimeout(pollVoice, POLL_VOICE_MS); });
  }

  // --- chaos ----------------------------------------------------------------------------------------------------

  function durationOf(input) {
    var value = parseFloat(input.value);
    return isFinite(value) && value > 0 ? value : null;
  }

  function applyFault(fault, duration, messageNode) {
    var body = JSON.parse(JSON.stringify(fault));
    if (duration !== null) body.duration = duration;
    messageNode.textContent = "applying…";
    messageNode.className = "message";
    return request("POST", "api/chaos/faults", body).then(function (w) {
      messageNode.textContent = "applied #" + w.index + " " + (w.label || "") + (w.error ? " (error: " + w.error + ")" : "");
      messageNode.className = w.error ? "message error" : "message ok";
      pollChaosOnce();
    }).catch(function (e) {
      messageNode.textContent = e.message;
      messageNode.className = "message error";
    });
  }

  function endFault(index, messageNode) {
    return request("DELETE", "api/chaos/faults/" + index).then(function () {
      pollChaosOnce();
    }).catch(function (e) {
      messageNode.textContent = "ending #" + index + ": " + e.message;
      messageNode.className = "message error";
    });
  }

  function isActive(w) {
    return w.applied_at_s !== null && w.applied_at_s !== undefined && (w.removed_at_s === null || w.removed_at_s === undefined);
  }

  function renderChaos(state) {
    presets = state.presets || [];
    lastFaults = state.faults || [];
    var message = $("fault-message");
    var deps = $("dependencies");
    clear(deps);
    (state.dependencies || []).forEach(function (d) {
      var tr = el("tr");
      var name = el("td");
      name.appendChild(el("b", d.name));
      if (d.proxy) name.appendChild(el("div", "proxy " + d.proxy, "small"));
      tr.appendChild(name);
      var active = el("td");
      var windows = d.active || [];
      if (!windows.length) active.appendChild(el("span", "none", "muted"));
      windows.forEach(function (w) {
        var chip = el("span", "#" + w.index + " " + (w.label || w.action), "chip");
        var end = el("button", "end", "small danger");
        end.type = "button";
        end.addEventListener("click", function () { endFault(w.index, message); });
        chip.appendChild(end);
        active.appendChild(chip);
      });
      tr.appendChild(active);
      var buttons = el("td");
      presets.filter(function (p) {
        return p.target === d.name && (d.provider_faults || !p.fault.provider);
      }).forEach(function (p) {
        var b = el("button", p.label, "small");
        b.type = "button";
        b.title = JSON.stringify(p.fault);
        b.addEventListener("click", function () { applyFault(p.fault, durationOf($("preset-duration")), message); });
        buttons.appendChild(b);
      });
      tr.appendChild(buttons);
      deps.appendChild(tr);
    });

    var select = $("preset-select");
    if (select.options.length !== presets.length + 1) {
      clear(select);
      select.appendChild(el("option", "(choose a preset)"));
      presets.forEach(function (p, i) {
        var o = el("option", p.target + ": " + p.label);
        o.value = String(i);
        select.appendChild(o);
      });
    }

    var faults = $("faults");
    clear(faults);
    var list = (state.faults || []).slice().reverse();
    if (!list.length) {
      var none = el("tr");
      var cell = el("td", "no fault yet", "muted");
      cell.colSpan = 8;
      none.appendChild(cell);
      faults.appendChild(none);
    }
    list.forEach(function (w) {
      var tr = el("tr", null, isActive(w) ? "active" : "");
      tr.appendChild(el("td", w.index));
      var label = el("td", w.label || "");
      label.title = JSON.stringify(w.spec || {});
      tr.appendChild(label);
      tr.appendChild(el("td", (w.action || "") + " on " + (w.target || "")));
      tr.appendChild(el("td", seconds(w.applied_at_s)));
      tr.appendChild(el("td", seconds(w.removed_at_s)));
      tr.appendChild(el("td", w.removed_because || ""));
      tr.appendChild(el("td", [w.error, w.rollback_error].filter(Boolean).join("; "), "error"));
      var action = el("td");
      if (isActive(w)) {
        var end = el("button", "end", "small danger");
        end.type = "button";
        end.addEventListener("click", function () { endFault(w.index, message); });
        action.appendChild(end);
      }
      tr.appendChild(action);
      faults.appendChild(tr);
    });
  }

  function pollChaosOnce() {
    return request("GET", "api/chaos").then(function (state) {
      $("chaos-missing").hidden = true;
      renderChaos(state);
    }).catch(function (e) {
      $("chaos-missing").hidden = false;
      $("chaos-missing").textContent = e.status === 404 ? "No chaos control in this process: " + e.message
        : "chaos state unavailable: " + e.message;
    });
  }

  function pollChaos() {
    pollChaosOnce().then(function () { setTimeout(pollChaos, POLL_CHAOS_MS); });
  }

  $("preset-select").addEventListener("change", function (event) {
    var p = presets[parseInt(event.target.value, 10)];
    if (p) $("fault-json").value = JSON.stringify(p.fault, null, 2);
  });

  $("fault-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var message = $("fault-message");
    var fault;
    try { fault = JSON.parse($("fault-json").value); } catch (e) {
      message.textContent = "not JSON: " + e.message;
      message.className = "message error";
      return;
    }
    applyFault(fault, durationOf($("fault-duration")), message);
  });

  // --- load (Locust's own endpoints) ----------------------------------------------------------------------------

  function pollLoad() {
    request("GET", locustBase + "/stats/requests").then(function (report) {
      $("load-state").textContent = "state: " + report.state + ", " + report.user_count + " calls" +
        (report.worker_count !== undefined ? ", " + report.worker_count + " workers" : "");
      // while a load runs, the box shows its size (unless the user is typing a new one)
      if (report.state === "running" && document.activeElement !== $("user-count")) {
        $("user-count").value = report.user_count;
      }
    }).catch(function (e) {
      $("load-state").textContent = "state unavailable: " + e.message;
    }).then(function () { setTimeout(pollLoad, POLL_CHAOS_MS); });
  }

  function loadMessage(text, ok) {
    $("load-message").textContent = text;
    $("load-message").className = ok ? "message ok" : "message error";
  }

  if (hasLocust && !embedded) {
    $("load").hidden = false;
    $("locust-ui").hidden = false;
    $("locust-ui").href = locustBase + "/";
    $("swarm").addEventListener("click", function () {
      // Locust 2.47's /swarm reads the form fields user_count (int) and spawn_rate (float > 0)
      request("POST", locustBase + "/swarm", undefined,
              {user_count: $("user-count").value, spawn_rate: $("spawn-rate").value}).then(function (r) {
        loadMessage(r.message, r.success);
      }).catch(function (e) { loadMessage(e.message, false); });
    });
    $("stop").addEventListener("click", function () {
      request("POST", locustBase + "/stop").then(function (r) {
        loadMessage(r.message, r.success);
      }).catch(function (e) { loadMessage(e.message, false); });
    });
    pollLoad();
  }

  window.addEventListener("hashchange", showTab);
  window.addEventListener("resize", function () { drawChart(lastHistory); });
  showTab();
  pollVoice();
  pollChaos();
})();
