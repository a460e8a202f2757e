"""The course site, as a reader sees it: every page opened in headless Chromium.

The site is built with the README's command (warnings are errors) into ``docs/_build/html``, then each page
is loaded from a local server and checked: its maths typeset (no ``$...$`` or ``\\frac`` left as text, no
MathJax error), every image loaded, every link inside the site pointing at a page (and an anchor) that
exists, and nothing written to the console as an error. Screenshots of the ELBO lesson and of ``VAE``'s API
page are saved to ``docs/_build/screenshots/``.

Needs the ``docs`` extra (``pip install -e ".[docs]"``) and Debian's ``chromium``; skipped without them.
"""

import functools
import http.server
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD = REPO / "docs" / "_build"
SITE = BUILD / "html"
BUILD_COMMAND = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium started for a machine without a network or a screen: no sandbox (the tests may run as root), no
# GPU, and none of the background connections it would make to its vendor's servers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

# Run in the page once MathJax has finished: the text a reader sees outside code and typeset maths, the
# MathJax errors, and every image with whether it loaded.
READ_PAGE = """() => {
  const skip = 'pre, code, script, style, mjx-container, .highlight, .output, .cell_output, textarea';
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.parentElement.closest(skip)) texts.push(node.textContent);
  }
  const images = [...document.images].map(img => ({src: img.currentSrc || img.src, loaded: img.complete,
                                                     width: img.naturalWidth}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return {text: texts.join(' '), mathErrors: document.querySelectorAll('mjx-merror').length,
          typeset: document.querySelectorAll('mjx-container').length, images, links};
}"""
# A formula left as source: $...$ (not a lone price-like $), \\( \\[, or a TeX command MathJax would have set.
RAW_MATH = re.compile(r"\$[^$\s][^$]*\$|\\\(|\\\[|\\(?:frac|sum|log|mathbb|mathcal|sigma|mu|int|prod|left|right)\b")
# reStructuredText shown as text (a docstring read as Markdown): a directive, a field or a role.
RAW_RST = re.compile(r"\.\. [a-z:-]+::|:(?:param|type|rtype|raises)\s|:(?:py:)?(?:mod|func|class|meth|attr|data|exc|ref):")


def built_site():
    """Build the site with the README's command; a second build rewrites only the pages whose sources changed."""
    pytest.importorskip("sphinx", reason='the site needs the docs extra: pip install -e ".[docs]"')
    pytest.importorskip("myst_nb", reason='the site needs the docs extra: pip install -e ".[docs]"')
    run = subprocess.run(BUILD_COMMAND, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"the site does not build without warnings:\n{run.stdout}\n{run.stderr}"
    return SITE


@pytest.fixture(scope="module")
def server():
    site = built_site()
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian: apt install chromium): the site is checked in a real browser")
    playwright = pytest.importorskip("playwright.sync_api", reason='the browser check needs the docs extra: '
                                                                  'pip install -e ".[docs]"')
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def pages_of(site):
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if "_static" not in p.parts)


def anchors_of(path, cache={}):
    if path not in cache:
        cache[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8")))
    return cache[path]


def read_page(browser, url):
    """Load one page; returns what READ_PAGE sees and what went wrong on the way (console, requests)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    if page.evaluate("() => !!(window.MathJax && MathJax.startup && MathJax.startup.promise)"):
        page.evaluate("() => MathJax.startup.promise")
    seen = page.evaluate(READ_PAGE)
    return page, seen, problems


def test_the_readme_gives_the_command_this_test_builds_with():
    command = " ".join(["python", *BUILD_COMMAND[1:]])
    assert command in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_every_page_reads_as_a_reader_sees_it(server, browser):
    site, root = server
    pages = pages_of(site)
    assert {"index.html", "lessons/01_elbo.html", "exercises/01_backward_passes.html",
            "api/model.html"} <= set(pages), "the site is missing the home page, a lesson, an exercise or the API"
    screenshots = {"lessons/01_elbo.html": "elbo_lesson.png", "api/model.html": "api_VAE.png"}
    (BUILD / "screenshots").mkdir(exist_ok=True)
    failures, counts = [], dict(pages=0, images=0, links=0, typeset=0)
    for name in pages:
        page, seen, problems = read_page(browser, root + name)
        counts["pages"] += 1
        counts["typeset"] += seen["typeset"]
        raw = RAW_MATH.findall(seen["text"])
        if raw:
            problems.append(f"maths left as source: {raw[:3]}")
        rst = RAW_RST.findall(seen["text"])
        if rst:
            problems.append(f"reStructuredText left as source: {rst[:3]}")
        if seen["mathErrors"]:
            problems.append(f"{seen['mathErrors']} formula(s) MathJax could not typeset")
        for image in seen["images"]:
            counts["images"] += 1
            if not (image["loaded"] and image["width"] > 0):
                problems.append(f"image not shown: {image['src']}")
        for link in seen["links"]:
            if not link.startswith(root):
                continue  # outside the site: not followed
            counts["links"] += 1
            address, _, fragment = link[len(root):].partition("#")
            target = site / urllib.parse.unquote(address or "index.html")
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"broken link: {link}")
            elif fragment and target.suffix == ".html" and urllib.parse.unquote(fragment) not in anchors_of(target):
                problems.append(f"link to a missing anchor: {link}")
        if name in screenshots:
            # the derivation's display maths, and the class's signature with its types
            where = {"lessons/01_elbo.html": "#jensen-s-inequality-gives-the-elbo",
                     "api/model.html": "[id=\"minivae.model.VAE\"]"}[name]
            page.evaluate("(where) => document.querySelector(where).scrollIntoView()", where)
            page.screenshot(path=str(BUILD / "screenshots" / screenshots[name]))
        page.close()
        failures += [f"{name}: {problem}" for problem in problems]
    print(f"checked {counts['pages']} pages: {counts['images']} images, {counts['links']} internal links, "
          f"{counts['typeset']} typeset formulas")
    assert not failures, "\n".join(failures[:40])
    assert counts["typeset"] > 100 and counts["images"] > 20, counts  # the lessons' maths and figures are there


@pytest.mark.slow
def test_the_checks_see_what_they_look_for(browser, tmp_path):
    """The checks themselves: an untypeset formula, raw reStructuredText, a missing image, a dead link and a script error are seen."""
    (tmp_path / "bad.html").write_text(
        "<html><body><p>the bound $\\log p(x)$ and \\frac{1}{2}</p><p>.. py:class:: VAE :param x: see :mod:</p><img src='missing.png'>"
        "<a href='nowhere.html'>x</a><script>undefined_function()</script></body></html>", encoding="utf-8")
    page, seen, problems = read_page(browser, (tmp_path / "bad.html").as_uri())
    page.close()
    assert len(RAW_MATH.findall(seen["text"])) == 2
    assert len(RAW_RST.findall(seen["text"])) == 3
    assert seen["images"] and not seen["images"][0]["width"]
    assert not (tmp_path / "nowhere.html").exists() and seen["links"][0].endswith("nowhere.html")
    assert any("undefined_function" in p for p in problems)
