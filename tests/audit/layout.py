"""Where the scorecard lands on the first screen of a report, measured in headless Chromium, and a screenshot.

Run as a script to write the screenshot of an audit report committed under results/audit/ (with the run's
scorecard.json beside it, as ``<name>.scorecard.json``: the numbers the picture shows):

    trustlab audit --model embedded --out runs/audit
    python -m tests.audit.layout runs/audit results/audit/report-embedded.png
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.browser import _FLAGS, chromium, render_dom

WIDTH, HEIGHT = 1280, 800  # a laptop's first screen

# Appended to a copy of the page (reports carry no scripts): writes the layout into the DOM that --dump-dom prints.
_PROBE = """<script>
(function () {
  var box = function (sel) { var e = document.querySelector(sel); if (!e) return null;
    var r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, width: r.width}; };
  var out = {viewport: [window.innerWidth, window.innerHeight], scorecard: box('#scorecard'),
             table: box('#scorecard table'), rows: document.querySelectorAll('#scorecard tbody tr').length,
             overflow: document.documentElement.scrollWidth > window.innerWidth};
  var pre = document.createElement('pre'); pre.id = 'layout-probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def scorecard_layout(page: str | Path, width: int = WIDTH, height: int = HEIGHT) -> tuple[dict, list[str]]:
    """(layout of ``#scorecard`` in a ``width`` x ``height`` window, console errors of the unmodified page)."""
    _, errors = render_dom(page)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(Path(page).read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run([chromium(), *_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                   "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', proc.stdout, re.S)
    if found is None:
        raise RuntimeError("the layout probe did not run")
    return json.loads(found.group(1).replace("&quot;", '"')), errors


def screenshot(page: str | Path, png: str | Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """A PNG of the first ``width`` x ``height`` screen of ``page``."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([chromium(), *_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                               "--hide-scrollbars", f"--screenshot={png}", Path(page).resolve().as_uri()],
                              capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium screenshot failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.audit.layout RUN_FOLDER OUT.png")
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    layout, errors = scorecard_layout(run / "report.html")
    if errors or layout["scorecard"] is None or layout["table"]["bottom"] > HEIGHT:
        sys.exit(f"the scorecard is not fully on the first screen, or the page logs errors: {layout} {errors}")
    card = out.with_suffix(".scorecard.json")
    card.write_text((run / "scorecard.json").read_text(encoding="utf-8"), encoding="utf-8")
    print(f"wrote {screenshot(run / 'report.html', out)} and {card}; the scorecard table ends at "
          f"{layout['table']['bottom']:.0f} px of {layout['viewport'][1]}")
