// voicechaos: fills the Voice and Chaos tabs of Locust's own web UI. Plain JS, loaded by Locust's index page.
//
// Locust draws its extra tabs' content itself and only as plain-text tables; ours have no table, so Locust leaves
// their panel empty. While one of them is selected this script shows the matching part of our page
// (/voicechaos/?embed=1#voice or #chaos: live figures, fault buttons) in a same-origin frame right under Locust's tab
// bar, sized to its content. Locust keeps the selected tab in the address (?tab=<key>), which is what is watched here.
// The frame's holder is the one node added to the DOM React owns: the last child of Locust's <main>, after React's
// own children, so React's updates never meet it; when React replaces <main> (its start form after a reset), the
// holder is put back on the next tick.
"use strict";

(function () {
  var script = document.currentScript;
  var page = script.getAttribute("data-page");
  var panels = JSON.parse(script.getAttribute("data-panels"));
  var TICK_MS = 250;
  var holder = null, frame = null, shown = null;

  function tabBar() { return document.querySelector("main [role=tablist]"); }

  function selectedPanel() {
    var key = new URLSearchParams(location.search).get("tab");
    // before a test starts, Locust shows its start form instead of the tabs, whatever the address says
    if (!key || !panels[key] || !tabBar()) return null;
    return panels[key];
  }

  function build() {
    holder = document.createElement("div");
    holder.id = "voicechaos-tab";
    holder.style.cssText = "max-width:1536px;margin:0 auto;padding:16px 24px 8px;box-sizing:border-box";
    frame = document.createElement("iframe");
    frame.title = "voicechaos";
    frame.style.cssText = "display:block;width:100%;height:600px;border:0;border-radius:6px";
    holder.appendChild(frame);
  }

  function attach() {
    var main = tabBar().closest("main");
    if (holder.parentNode !== main || holder !== main.lastElementChild) main.appendChild(holder);
  }

  function fit() {
    try {
      var doc = frame.contentDocument;
      var height = doc && doc.documentElement ? doc.documentElement.scrollHeight : 0;
      if (height > 0) frame.style.height = height + "px";
    } catch (e) { /* not loaded yet */ }
  }

  function tick() {
    var panel = selectedPanel();
    if (panel === null) {
      if (holder) holder.hidden = true;
      return;
    }
    if (!holder) build();
    attach();
    if (panel !== shown) {
      // the same page for both tabs: once loaded, switching is a change of fragment, not a reload
      if (shown === null) frame.src = page + "?embed=1#" + panel;
      else frame.contentWindow.location.hash = panel;
      shown = panel;
    }
    holder.hidden = false;
    fit();
  }

  setInterval(tick, TICK_MS);
  tick();
})();
