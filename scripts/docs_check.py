"""Renders pages of the built documentation in headless Chromium and checks them.

Usage (after ``bash scripts/docs.sh``; needs Debian's ``chromium`` package):

    .venv/bin/python scripts/docs_check.py [--html docs/_build/html] [--out docs/_build/check]

The site is served from 127.0.0.1 and every request elsewhere is refused, so the pages
must render offline. On the home page, an API page with math, the four science pages
(with math) and the gallery, after MathJax has finished it checks that

- the math rendered: every Sphinx math element holds MathJax output, none is a TeX error
  (``mjx-merror``), and no raw TeX (``\\(``, ``\\[``, ``$$``, ``\\frac``, ``\\mathrm``,
  ``\\begin``) is left in the visible text outside code blocks;
- every ``<img>`` loaded (``complete`` and ``naturalWidth > 0``);
- no request failed and no request left the machine;

and, over every HTML file of the build, that each internal link points to a file that
exists and, when it has a ``#fragment``, to an element with that id. It writes a
full-page screenshot of each rendered page into ``--out`` and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import pathlib
import shutil
import sys
import threading
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (page, expects math)
PAGES = (
    ("index.html", False),
    ("api/jaxkl.estimators.html", True),
    ("estimators.html", True),
    ("grpo.html", True),
    ("forward_reverse.html", True),
    ("kl_config.html", True),
    ("gallery.html", False),
)
RAW_TEX = ("\\(", "\\)", "\\[", "\\]", "$$", "\\frac", "\\mathrm", "\\begin{")

# Runs in the page: the visible text outside code, and what MathJax and the images did.
INSPECT_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "MJX-CONTAINER", "NOSCRIPT"]);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName)) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  const texts = [];
  while (walker.nextNode()) texts.push(walker.currentNode.nodeValue);
  const maths = [...document.querySelectorAll(".math")];
  return {
    text: texts.join(" "),
    mathjax_loaded: !!(window.MathJax && MathJax.version),
    math_elements: maths.length,
    math_unrendered: maths.filter((m) => !m.querySelector("mjx-container")).length,
    mjx_containers: document.querySelectorAll("mjx-container").length,
    mjx_errors: document.querySelectorAll("mjx-merror").length,
    images: [...document.images].map((img) => ({
      src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0,
      width: img.naturalWidth,
    })),
  };
}
"""


def chromium_executable() -> str:
    """Debian's /usr/bin/chromium is a shell wrapper; playwright needs the binary."""
    for path in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "",
                 shutil.which("chromium-browser") or ""):
        if path and pathlib.Path(path).is_file():
            return path
    raise SystemExit("docs_check: no Chromium found (Debian: apt-get install -y chromium)")


class _Links(html.parser.HTMLParser):
    """Collects the ids and the hrefs of one HTML file."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def broken_internal_links(html_dir: pathlib.Path) -> list[str]:
    """Every relative href of every page resolves to a file, and its fragment to an id."""
    parsed: dict[pathlib.Path, _Links] = {}

    def parse(path: pathlib.Path) -> _Links:
        if path not in parsed:
            links = _Links()
            links.feed(path.read_text(encoding="utf-8", errors="replace"))
            parsed[path] = links
        return parsed[path]

    broken = []
    for page in sorted(html_dir.rglob("*.html")):
        for href in parse(page).hrefs:
            url = urllib.parse.urlsplit(href)
            if url.scheme or url.netloc or href.startswith("mailto:"):
                continue  # external: not checked (and never fetched)
            target = page if not url.path else (page.parent / urllib.parse.unquote(url.path))
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(html_dir)}: {href}"
            if not target.is_file() or html_dir.resolve() not in target.parents:
                broken.append(f"{where} (no file {target})")
            elif url.fragment and target.suffix == ".html":
                if urllib.parse.unquote(url.fragment) not in parse(target).ids:
                    broken.append(f"{where} (no id {url.fragment!r} in {target.name})")
    return broken


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(html_dir: pathlib.Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def check_pages(html_dir: pathlib.Path, out: pathlib.Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    failures = []
    server, base = _serve(html_dir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_executable(),
                                         args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            outside, failed = [], []

            def route(r):
                if r.request.url.startswith(base):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("requestfailed", lambda req: failed.append(req.url))
            page.on("response", lambda resp: resp.status >= 400 and failed.append(
                f"{resp.url} (HTTP {resp.status})"))
            for name, expects_math in PAGES:
                outside.clear()
                failed.clear()
                page.goto(base + name, wait_until="load")
                info = page.evaluate(INSPECT_JS)
                page.wait_for_load_state("networkidle")
                shot = out / (name.replace("/", "_").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot), full_page=True)
                problems = []
                raw = sorted({t for t in RAW_TEX if t in info["text"]})
                if raw:
                    problems.append(f"raw TeX in the visible text: {raw}")
                if expects_math and not (info["mathjax_loaded"] and info["mjx_containers"]):
                    problems.append("no MathJax output on a page with math")
                if info["math_unrendered"] or info["mjx_errors"]:
                    problems.append(f"{info['math_unrendered']} math elements not rendered, "
                                    f"{info['mjx_errors']} TeX errors")
                bad_images = [img["src"] for img in info["images"] if not img["ok"]]
                if bad_images:
                    problems.append(f"images not loaded: {bad_images}")
                if outside:
                    problems.append(f"requests outside the site (refused): {outside}")
                if failed:
                    problems.append(f"failed requests: {failed}")
                status = "ok" if not problems else "FAIL"
                where = shot.relative_to(ROOT) if ROOT in shot.parents else shot
                print(f"{status:4} {name}: {info['mjx_containers']} formulas rendered "
                      f"({info['math_elements']} math elements), "
                      f"{len(info['images']) - len(bad_images)}/{len(info['images'])} images "
                      f"loaded, screenshot {where}")
                failures += [f"{name}: {p}" for p in problems]
            browser.close()
    finally:
        server.shutdown()
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--html", type=pathlib.Path, default=ROOT / "docs" / "_build" / "html")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "_build" / "check")
    args = parser.parse_args()
    if not (args.html / "index.html").is_file():
        print(f"docs_check: no {args.html}/index.html; run bash scripts/docs.sh first")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failures = check_pages(args.html, args.out)
    broken = broken_internal_links(args.html)
    pages = len(list(args.html.rglob("*.html")))
    print(f"{'ok' if not broken else 'FAIL':4} internal links: {pages} pages, "
          f"{len(broken)} broken")
    failures += [f"broken link: {b}" for b in broken]
    for failure in failures:
        print(f"docs_check: {failure}")
    print("docs_check: " + ("passed" if not failures else f"{len(failures)} failures"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
