"""``ccmon report --format html`` in headless Chromium: the page is self-contained (it asks
for nothing but itself), raises no error, and draws a chart per queue whose bars are the
table's rows. Needs no Kafka or Redis (no ``integration`` marker); skipped only where Chromium
or playwright is missing, with the helpers of test_demo_browser. The screenshot goes to
``test-artifacts/report.png``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.browser import ARTIFACTS, chromium_page, needs_chromium

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "basic.jsonl"


@needs_chromium
def test_the_html_report_renders_offline(tmp_path: Path) -> None:
    page_path = tmp_path / "report.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "report",
            str(GOLDEN),
            "--from",
            "2026-11-20T09:00:00Z",
            "--to",
            "2026-11-20T10:00:00Z",
            "--interval",
            "15m",
            "--format",
            "html",
            "-o",
            str(page_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    with chromium_page(tmp_path / "profile", 1200, 900) as (page, errors):
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri())
        charts = page.eval_on_selector_all("svg.chart", "els => els.length")
        bars = page.eval_on_selector_all("svg.chart rect", "els => els.filter(e => e.getBBox().height > 0).length")
        headings = page.eval_on_selector_all("section h2", "els => els.map(e => e.textContent)")
        cells = page.eval_on_selector_all("tbody tr", "rows => rows.map(r => r.children[3].textContent)")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert errors == []
    assert requests == [page_path.as_uri()]  # nothing fetched: no CDN, no font, no script
    assert headings == ["default / support", "default / _all"] and charts == 2
    assert cells.count("support") >= 2
    assert bars > 0
