"""`make docs`, the browser half: run a page once in headless chromium and keep what it built.

Usage: prerender-docs.py PAGE SCRIPT OUT

Opens the file PAGE in Debian's chromium (Playwright for Python drives it; no browser is
downloaded), evaluates the JavaScript expression in the file SCRIPT there (it may return a
promise), and writes the result to OUT as JSON. Fails on any error the page throws.
build-docs.mjs calls it with the AsyncAPI component's page and its `freezeDocs`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    path = os.environ.get("GRAPHWIRE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        sys.exit("prerender-docs: Debian's chromium is not installed: run `make setup` (apt-get install chromium)")
    return path


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit(__doc__)
    page_path, script_path, out_path = (Path(arg).resolve() for arg in argv[1:])
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            # 1280 px wide: the component's one-column layout, which it starts in.
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_path.as_uri())
            result = page.evaluate(script_path.read_text(encoding="utf-8"))
            if errors:
                sys.exit("prerender-docs: the page failed:\n" + "\n".join(errors))
        finally:
            browser.close()
    out_path.write_text(json.dumps(result), encoding="utf-8")
    print(f"prerender-docs: rendered {page_path.name} in chromium in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv)
