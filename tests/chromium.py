"""Headless Chromium for the report's tests: a screenshot of a local page, what its images did, and its DOM.

The report must open in any browser with nothing but the file, so the tests open it in a real one: Debian's
``chromium`` (``make test`` installs it). Every call starts a fresh browser with a throwaway profile, no network
(a dead proxy for every URL and no host name resolving; ``file:`` and ``data:`` URLs still load), a hard timeout,
and ends the browser's whole process group on the way out so that no renderer outlives the test.

The page under test needs no JavaScript. To learn whether each ``<img>`` decoded, :func:`image_report` opens a
temporary copy of the page with a small probe script added: on ``load`` it writes the images' state as JSON into a
``<pre id="voicechaos-imgs">``, which ``--dump-dom`` then prints.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's package; the tests pin this browser, not whatever else is on PATH
PROBE_ID = "voicechaos-imgs"
# load, then give the page's images this much virtual time to decode before the DOM or the screenshot is taken
_VIRTUAL_TIME_MS = 5000
_PROBE = f"""<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.map.call(document.images, function (img) {{
    var box = img.getBoundingClientRect();
    return {{src: (img.getAttribute("src") || "").slice(0, 40), complete: img.complete,
            naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
            width: Math.round(box.width), height: Math.round(box.height), alt: img.getAttribute("alt") || ""}};
  }});
  var pre = document.createElement("pre");
  pre.id = "{PROBE_ID}";
  pre.textContent = JSON.stringify(images);
  document.body.appendChild(pre);
}});
</script>"""
_VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"))


class ChromiumError(RuntimeError):
    """Chromium could not be run, failed, or did not finish in time."""


def find_chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


skip_without_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="Debian's chromium is not installed (`make test` installs it: apt-get install chromium)")


@pytest.fixture
def chromium() -> str:
    """The browser's path; the test is skipped (with the reason) only when it is not installed."""
    path = find_chromium()
    if path is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it: apt-get install chromium)")
    return path


def _run(page: Path, extra: list[str], *, timeout_s: float) -> bytes:
    binary = find_chromium()
    if binary is None:
        raise ChromiumError("chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="voicechaos-chromium-") as profile:
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-dev-shm-usage",
                # no network: every request goes to a proxy that refuses, and no name resolves
                "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--virtual-time-budget={_VIRTUAL_TIME_MS}", *extra, page.resolve().as_uri()]
        # a session of its own: the browser's helpers (zygote, renderer, GPU) are ended with it, by its group id
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise ChromiumError(f"chromium did not finish within {timeout_s:g} s on {page}") from None
        finally:
            _kill_group(process)
    if process.returncode != 0:
        # D-Bus complaints are noise in a container; the rest says why it failed
        tail = [line for line in err.decode(errors="replace").splitlines() if "dbus" not in line][-10:]
        raise ChromiumError(f"chromium exited with {process.returncode} on {page}:\n" + "\n".join(tail))
    return out


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        process.communicate()


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2400, *, timeout_s: float = 90.0) -> None:
    """A PNG of the page in a ``width`` x ``height`` window (tall, so the targets table and the first plots show)."""
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    _run(page, [f"--window-size={width},{height}", f"--screenshot={png}"], timeout_s=timeout_s)
    if not png.is_file() or png.stat().st_size == 0:
        raise ChromiumError(f"chromium wrote no screenshot of {page}")


def dump_dom(page: Path, *, timeout_s: float = 90.0) -> str:
    """The page's DOM as the browser built it (after load), serialised."""
    return _run(page, ["--dump-dom"], timeout_s=timeout_s).decode("utf-8", errors="replace")


def with_probe(text: str, base: Path) -> str:
    """The page with the image probe added, and a ``<base>`` so that its relative URLs still point beside the
    original (the copy lives in a temporary folder)."""
    base_tag = f'<base href="{html.escape(base.resolve().as_uri())}/">'
    head = re.search(r"<head\b[^>]*>", text, re.IGNORECASE)
    text = text[:head.end()] + base_tag + text[head.end():] if head else base_tag + text
    body_end = text.lower().rfind("</body>")
    return text[:body_end] + _PROBE + text[body_end:] if body_end >= 0 else text + _PROBE


def image_report(page: Path, *, timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """For every ``<img>`` of the page, in document order: ``src`` (its first 40 characters), ``complete``,
    ``naturalWidth``/``naturalHeight`` (0 when it did not decode), the rendered ``width``/``height`` and ``alt``."""
    page = Path(page)
    with tempfile.TemporaryDirectory(prefix="voicechaos-probe-") as folder:
        copy = Path(folder) / page.name
        copy.write_text(with_probe(page.read_text(encoding="utf-8"), page.parent), encoding="utf-8")
        dom = dump_dom(copy, timeout_s=timeout_s)
    return parse_probe(dom)


def parse_probe(dom: str) -> list[dict[str, Any]]:
    found = re.search(rf'<pre id="{PROBE_ID}">(.*?)</pre>', dom, re.DOTALL)
    if found is None:
        raise ChromiumError(f"the image probe did not run (no <pre id={PROBE_ID!r}> in the dumped DOM)")
    images: list[dict[str, Any]] = json.loads(html.unescape(found.group(1)))
    return images


class _Rows(HTMLParser):
    """The data rows (``<tr>`` with ``<td>`` cells) inside the element with a given id."""

    def __init__(self, element_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.element_id = element_id
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, is the wanted element)
        self.rows: list[list[str]] = []
        self.found = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def _inside(self) -> bool:
        return any(wanted for _, wanted in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = dict(attrs).get("id") == self.element_id
        self.found = self.found or wanted
        if tag not in _VOID:
            self.stack.append((tag, wanted))
        if not self._inside():
            return
        if tag == "tr":
            self._row = []
            self.rows.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._row.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[-1] = " ".join(" ".join(self._cell).split())  # a title and its <code> name stay apart
            self._cell = None
        for depth in range(len(self.stack) - 1, -1, -1):  # close it and whatever was left open inside it
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                break

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(dom: str, element_id: str) -> list[list[str]]:
    """The cell texts of every row inside the element ``id=element_id`` (header rows included, as ``th``);
    raises when there is no such element."""
    parser = _Rows(element_id)
    parser.feed(dom)
    parser.close()
    if not parser.found:
        raise AssertionError(f"no element with id {element_id!r} in the page")
    return [row for row in parser.rows if row]
