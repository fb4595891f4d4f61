"""The HTML pages the pipeline writes render with no network: GX Data Docs and `dvc plots show`.

Each page is opened in headless Chromium with every network fetch sent to a dead proxy
(127.0.0.1:9), so a CDN URL that is still in a page fails exactly as it would on an offline
machine. What rendered is read back from the DOM that Chromium dumps:

- Data Docs (built by the real `validate` code on the validation tests' tiny dataset): no page
  loads anything from off the machine. A probe script appended to a copy of the index page and
  of a validation page records which libraries ran, which stylesheets failed, the navbar's
  computed `display` (flex only with Bootstrap's CSS), the icon font, and the tables that
  bootstrap-table's JS built. The same probe on the index as GX wrote it (CDN links) must show
  an unstyled page. That control proves both that the browser really is offline and that the
  probe tells styled from unstyled.
- DVC plots: vega-embed draws each plot into a <canvas class="marks"> (or <svg>) inside its div.

Chromium is required (the Makefile's `test` target installs it). Without it the test fails,
unless RECFOUND_SKIP_BROWSER=1 says to skip the browser checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

# The tiny unified dataset and config of the validation tests; importing the autouse fixture
# makes it apply here too (hand-made datasets have no build.json).
from test_validate import (  # noqa: F401 - pytest fixtures are used by name
    _config,
    _hand_made_datasets_pass_the_build_gate,
    _save,
    good_rows,
)

from recfound.data import docs_assets, validate

ROOT = Path(__file__).resolve().parents[1]
SKIP_BROWSER_ENV = "RECFOUND_SKIP_BROWSER"
CSS_REMOTE_URL = re.compile(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)")
# A page that is still loading after this much virtual time has failed.
VIRTUAL_TIME_MS = 10_000
PROBE = """
<script>
// A stylesheet that failed to load has no rules; reading them throws for one that is missing.
const rules = (link) => { try { return link.sheet.cssRules.length; } catch (e) { return 0; } };
// Read after load, web fonts and a pause for the page's own ready handlers (bootstrap-table
// builds its tables in one); the pause costs no real time under --virtual-time-budget.
const settled = () => new Promise((done) => setTimeout(done, 1000));
window.addEventListener("load", () => document.fonts.ready.then(settled).then(() => {
  const $ = window.jQuery;
  const icon = document.querySelector("i.fas");
  const probe = {
    scripts: {
      jquery: typeof $ === "function",
      popper: typeof window.Popper === "function",
      bootstrap: !!($ && $.fn.modal),
      bootstrapTable: !!($ && $.fn.bootstrapTable),
      datepicker: !!($ && $.fn.datepicker),
      vega: typeof window.vega === "object",
      vegaLite: typeof window.vegaLite === "object",
      vegaEmbed: typeof window.vegaEmbed === "function",
    },
    failedStylesheets: [...document.querySelectorAll("link[rel=stylesheet]")]
      .filter((link) => !rules(link)).map((link) => link.getAttribute("href")),
    navbarDisplay: getComputedStyle(document.querySelector(".navbar")).display,
    iconFont: icon ? getComputedStyle(icon, "::before").fontFamily : null,
    loadedFonts: [...document.fonts].filter((f) => f.status === "loaded").map((f) => f.family),
    builtTables: document.querySelectorAll("div.bootstrap-table").length,
    filterControls: document.querySelectorAll(".filter-control select").length,
  };
  document.body.setAttribute("data-probe", JSON.stringify(probe));
}));
</script>
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary; a missing one fails the test unless the env var says skip."""
    if os.environ.get(SKIP_BROWSER_ENV) == "1":
        pytest.skip(f"{SKIP_BROWSER_ENV}=1: browser checks skipped")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium not found: install it (`apt-get install -y chromium`; `make test` does) "
            f"or set {SKIP_BROWSER_ENV}=1 to skip the browser checks"
        )
    return found


def dump_dom(chromium: str, page: Path, profile: Path) -> str:
    """The DOM of `page` after its scripts ran, as headless Chromium with no network sees it."""
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # the tests run as root
            "--disable-gpu",
            "--proxy-server=127.0.0.1:9",  # nothing listens there: every fetch fails
            # Lets the probe read the rules of file:// stylesheets (loading them needs no flag).
            "--allow-file-access-from-files",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"chromium failed on {page}:\n{done.stderr[-3000:]}"
    return done.stdout


class _Resources(HTMLParser):
    """The URLs that a page loads (script src, link href, img src), and its body's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        loaded = {"script": "src", "link": "href", "img": "src"}.get(tag)
        if loaded and named.get(loaded):
            self.urls.append(named[loaded])
        if tag == "body":
            self.body = named


def parse(html: str) -> _Resources:
    parser = _Resources()
    parser.feed(html)
    return parser


def probe(chromium: str, page: Path, profile: Path) -> dict:
    """What rendered on `page`: the probe's record, from a copy of it next to the original."""
    probed = page.with_name(f"probe-{page.name}")
    html = page.read_text(encoding="utf-8")
    probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    record = parse(dump_dom(chromium, probed, profile)).body.get("data-probe")
    assert record, f"{page}: the page did not finish loading within {VIRTUAL_TIME_MS} ms"
    return json.loads(record)


def assert_styled(record: dict) -> None:
    """Every library ran, every stylesheet and the icon font loaded, and tables were built."""
    assert all(record["scripts"].values()), f"scripts not loaded: {record['scripts']}"
    assert record["failedStylesheets"] == [], record
    assert record["navbarDisplay"] == "flex", record  # Bootstrap's .navbar
    assert "Font Awesome 6 Free" in record["iconFont"], record
    assert "Font Awesome 6 Free" in record["loadedFonts"], record  # the vendored woff2
    assert record["builtTables"] >= 1, record


def test_data_docs_load_everything_from_the_site_and_render_styled_offline(
    tmp_path,
    good_rows,  # noqa: F811 - the fixture imported above
    monkeypatch,
    request,
):
    cfg = _config(tmp_path)
    _save(good_rows, cfg.paths.unified)
    # Keep a copy of the site as GX wrote it, for the control below.
    as_gx_wrote = tmp_path / "as_gx_wrote"
    make_offline = validate.make_data_docs_offline

    def keep_a_copy_then_make_offline(site: Path) -> None:
        shutil.copytree(site, as_gx_wrote)
        make_offline(site)

    monkeypatch.setattr(validate, "make_data_docs_offline", keep_a_copy_then_make_offline)
    validate.run(cfg)
    site = cfg.paths.validation / validate.DATA_DOCS_DIR

    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 2, "expected the index, suite and validation pages"
    for page in pages:
        html = page.read_text(encoding="utf-8")
        for url in parse(html).urls:
            parts = urlsplit(url)
            assert parts.scheme in ("", "data") and not parts.netloc, f"{page}: loads {url}"
            # What the rewrite points at exists. (GX's own favicon link is one folder short
            # on validation pages; a missing icon needs no network either.)
            if docs_assets.VENDOR_DIR in url or url.endswith(docs_assets.LOCAL_LOGO):
                assert (page.parent / unquote(parts.path)).is_file(), f"{page}: {url} missing"
        assert not CSS_REMOTE_URL.search(html), f"{page}: {CSS_REMOTE_URL.search(html)}"

    # The browser last: with RECFOUND_SKIP_BROWSER=1 the checks above still run.
    chromium = request.getfixturevalue("chromium")
    profile = tmp_path / "profile"
    index = probe(chromium, site / "index.html", profile)
    assert_styled(index)
    assert index["filterControls"] >= 1, index  # bootstrap-table's filter-control extension
    # A validation page, four folders down: the relative paths work from there too.
    assert_styled(probe(chromium, next((site / "validations").rglob("*.html")), profile))

    unstyled = probe(chromium, as_gx_wrote / "index.html", profile)
    assert not any(unstyled["scripts"].values()), f"the browser is online: {unstyled}"
    assert unstyled["failedStylesheets"], unstyled
    assert unstyled["navbarDisplay"] != "flex" and unstyled["builtTables"] == 0, unstyled


def test_the_dvc_plots_template_is_generated_from_the_vendored_vega():
    checked_in = (ROOT / docs_assets.DVC_PLOTS_TEMPLATE).read_text(encoding="utf-8")
    assert checked_in == docs_assets.dvc_plots_template(), (
        f"{docs_assets.DVC_PLOTS_TEMPLATE} is stale: run `python -m recfound.data.docs_assets`"
    )


def test_dvc_plots_show_writes_a_page_that_draws_the_plot_offline(tmp_path, request):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def dvc(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"

    dvc("init", "--no-scm", "-q")
    # The repository's own DVC config (its plots.html_template) and plot templates.
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots", dirs_exist_ok=True)
    rows = [
        f"{step},{task},{1 / (step + 1 + i)}" for step in range(4) for i, task in enumerate("xy")
    ]
    (repo / "loss.csv").write_text("step,task,loss\n" + "\n".join(rows) + "\n")
    (repo / "dvc.yaml").write_text(
        "plots:\n  - loss.csv:\n      x: step\n      y: loss\n      template: per_task\n"
    )
    dvc("plots", "show", "-q")

    page = repo / "dvc_plots" / "index.html"
    assert parse(page.read_text(encoding="utf-8")).urls == [], "the page loads files"
    dom = dump_dom(request.getfixturevalue("chromium"), page, tmp_path / "profile")
    drawn = dom.count('class="marks"')
    assert drawn == 1, f"vega drew {drawn} plots, expected 1:\n{dom[-2000:]}"
