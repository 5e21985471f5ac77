"""Build the HTML report of finished runs, load it in headless Chromium, and keep a screenshot for the README.

Measures the page as a reader gets it: seconds to build it, its size and its assets' size, how many
players and charts it has, and how long Chromium takes until every audio element has loaded its
metadata. Writes benchmarks/results/report_page.json and the screenshot (default docs/report.png,
the top `--height` pixels of the page at 1280 px wide).

    .venv/bin/python benchmarks/report_page.py RUN_DIR [RUN_DIR ...] --home DIR [--out docs/report.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from songtrace.report import build_report

RESULTS = Path(__file__).parent / "results"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-quic"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "report.png")
    parser.add_argument("--height", type=int, default=2000, help="pixels of the page's top kept in the screenshot")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = build_report(args.runs, Path(tmp) / "report.html", home=args.home, top_k=args.top)
        build_seconds = time.perf_counter() - t0
        assets = sum(p.stat().st_size for p in report.assets.iterdir()) if report.assets else 0
        page_bytes = report.path.stat().st_size
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=shutil.which("chromium"),
                                                           headless=True, args=FLAGS, viewport={"width": 1280, "height": args.height})
            tab = context.new_page()
            t0 = time.perf_counter()
            tab.goto(report.path.as_uri())
            tab.wait_for_function("() => Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error)")
            load_seconds = time.perf_counter() - t0
            counts = tab.evaluate("() => ({audio: document.querySelectorAll('audio').length, "
                                  "charts: document.querySelectorAll('img.chart').length, "
                                  "errors: Array.from(document.querySelectorAll('audio')).filter(a => a.error).length})")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(args.out), clip={"x": 0, "y": 0, "width": 1280, "height": args.height})
            context.close()
    result = {"benchmark": "report_page", "runs": [str(r) for r in args.runs], "build_seconds": round(build_seconds, 2),
              "page_bytes": page_bytes, "assets_bytes": assets,
              "load_seconds_chromium": round(load_seconds, 2), **counts, "summary": report.summary, "screenshot": str(args.out),
              "machine": {"platform": platform.platform(), "load_average": os.getloadavg()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report_page.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2, default=str))


if __name__ == "__main__":
    main()
