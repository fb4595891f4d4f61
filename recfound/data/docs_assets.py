"""Make the HTML pages the pipeline writes render offline, from web assets vendored in the package.

The Great Expectations Data Docs (stage `validate`) and the `dvc plots show` page load jQuery,
Bootstrap, Font Awesome and Vega from CDNs, so on a machine without network access (CI, an
air-gapped cluster, a laptop on a train) they show unstyled tables and empty plots. The files
they need are vendored unmodified under recfound/assets/web (its README.md lists the package,
version and licence of each one), and:

- `make_data_docs_offline` copies them into a Data Docs site's static/vendor/ and points every
  page's CDN <script>/<link>, and GX's logo on S3, at the local copies; the paths are relative,
  so the site still works after it is moved or archived;
- `dvc_plots_template` is the page `dvc plots show` fills (.dvc/config `plots.html_template`),
  with Vega, Vega-Lite and Vega-Embed inlined so that the written page is one self-contained
  file. `python -m recfound.data.docs_assets` rewrites DVC_PLOTS_TEMPLATE from the vendored files.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

WEB_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "web"
# Where the vendored files go inside a Data Docs site (next to GX's own static/images etc.).
VENDOR_DIR = "static/vendor"
# The local logo GX itself ships in every site (GX's template computes this path, then
# overrides it with the S3 URL).
LOCAL_LOGO = "static/images/logo-long.png"

# Each CDN URL that GX 1.24's page templates write -> the vendored file (under WEB_ASSETS) that
# replaces it.
GX_CDN_FILES: dict[str, str] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js-1.12.9/dist/umd/popper.min.js"
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap-4.3.1/dist/css/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap-4.3.1/dist/js/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table-1.19.1/dist/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table-1.19.1/dist/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": (
        "bootstrap-table-1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js"
    ),
    # GX names the unminified stylesheet on most pages and the minified one on the index; they
    # hold the same rules.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": (
        "bootstrap-table-1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": (
        "bootstrap-table-1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": (
        "bootstrap-datepicker-1.9.0/dist/css/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": "bootstrap-datepicker-1.9.0/dist/js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": "bootstrap-dark-1.1.0/dist/css/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome-free-6.6.0/css/all.min.css"
    ),
    # GX asks for the newest 5.x / 6.x; these are the vendored (pinned) ones.
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/build/vega-embed.min.js",
}
# GX's logo on its S3 bucket, with the `?d=<timestamp>` GX appends to each page's copy.
GX_S3_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[\w.-]+/logo-long\.png[^\"']*")
# The white logo GX's dark-mode CSS puts behind the (then hidden) navbar logo. It has no local
# copy, so the background is dropped: in dark mode the navbar shows no logo rather than
# needing the network.
GX_S3_DARK_LOGO = re.compile(
    r"url\(\s*['\"]?https://great-expectations-web-assets\.s3\.[^)]*full_logo_dark\.png['\"]?\s*\)"
)
# A <script>, <link> or <img> start tag, and a quoted absolute URL in one.
RESOURCE_TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
QUOTED_URL = re.compile(r"([\"'])(https?://[^\"']+)\1")
# Subresource-integrity attributes, dropped from rewritten tags: Chromium refuses a
# `crossorigin` request to a file:// URL, and the vendored files are pinned in the repo.
SRI_ATTRIBUTE = re.compile(r"\s+(?:integrity|crossorigin)\s*=\s*([\"'])[^\"']*\1", re.IGNORECASE)

# The Vega files inlined into the DVC plots page, in load order (vega-embed needs the others).
DVC_PLOTS_SCRIPTS = (
    "vega-5.33.1/build/vega.min.js",
    "vega-lite-5.23.0/build/vega-lite.min.js",
    "vega-embed-6.29.0/build/vega-embed.min.js",
)
# What DVC replaces in a page template (dvc_render.html.HTML.embed).
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")
# The page template, relative to the repository root; .dvc/config names it (relative to .dvc/).
DVC_PLOTS_TEMPLATE = Path(".dvc/plots/offline.html")


def localise_page(html: str, site_root: str) -> str:
    """`html` with GX's CDN resources and S3 logo pointed at the site's local copies.

    `site_root`: the path from the page's folder to the site root ("." for index.html,
    "../../../.." for a validation page), so every link stays relative.
    """

    def local_url(match: re.Match[str]) -> str:
        quote, url = match.groups()
        if url in GX_CDN_FILES:
            return f"{quote}{site_root}/{VENDOR_DIR}/{GX_CDN_FILES[url]}{quote}"
        if GX_S3_LOGO.fullmatch(url):
            return f"{quote}{site_root}/{LOCAL_LOGO}{quote}"
        return match.group(0)

    def local_tag(match: re.Match[str]) -> str:
        tag = QUOTED_URL.sub(local_url, match.group(0))
        return SRI_ATTRIBUTE.sub("", tag) if tag != match.group(0) else tag

    return GX_S3_DARK_LOGO.sub("none", RESOURCE_TAG.sub(local_tag, html))


def make_data_docs_offline(site: Path) -> None:
    """Copy the vendored assets into the Data Docs `site` and point every page at them."""
    shutil.copytree(WEB_ASSETS, site / VENDOR_DIR, dirs_exist_ok=True)
    for page in site.rglob("*.html"):
        site_root = Path(os.path.relpath(site, page.parent)).as_posix()
        html = page.read_text(encoding="utf-8")
        page.write_text(localise_page(html, site_root), encoding="utf-8")


def dvc_plots_template() -> str:
    """The HTML template for `dvc plots show` / `dvc plots diff`, with Vega inlined.

    DVC replaces `{plot_divs}` (required), `{refresh_tag}` and `{scripts}` by plain string
    replacement. `{scripts}` is left out on purpose, because DVC would put its CDN <script>
    tags there.
    """
    scripts = []
    for name in DVC_PLOTS_SCRIPTS:
        code = (WEB_ASSETS / name).read_text(encoding="utf-8")
        # Inline JS ends at the first "</script"; a placeholder in it would be replaced by DVC.
        if "</script" in code.lower() or any(p in code for p in DVC_PLACEHOLDERS):
            raise ValueError(f"{WEB_ASSETS / name}: cannot be inlined into an HTML template")
        scripts.append(f"<script>/* {name} */\n{code}\n</script>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<!-- The page `dvc plots show` writes (.dvc/config plots.html_template). Vega,",
            "     Vega-Lite and Vega-Embed are inlined so the page needs no network: Copyright (c)",
            "     2015-2023, University of Washington Interactive Data Lab, BSD-3-Clause; the",
            "     licence texts are in recfound/assets/web/. Generated by",
            "     `python -m recfound.data.docs_assets`: do not edit. -->",
            "<html>",
            "<head>",
            '<meta charset="utf-8">',
            "{refresh_tag}",
            "<title>DVC Plot</title>",
            *scripts,
            "<style>",
            "    table {",
            "        border-spacing: 15px;",
            "    }",
            "</style>",
            "</head>",
            "<body>",
            "{plot_divs}",
            "</body>",
            "</html>",
            "",
        ]
    )


def write_dvc_plots_template(path: Path = DVC_PLOTS_TEMPLATE) -> Path:
    """Write `dvc_plots_template()` to `path` (default: the repository's, from its root)."""
    path.write_text(dvc_plots_template(), encoding="utf-8")
    return path


if __name__ == "__main__":  # pragma: no cover - `python -m recfound.data.docs_assets`
    print(write_dvc_plots_template())
