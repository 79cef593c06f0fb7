"""Writing figures to disk: HTML that opens offline, and PNG where a Chrome or Chromium exists.

HTML figures reference plotly.js from a `plotly.min.js` written once beside them (a CDN link
would open blank on an offline machine; embedding it costs 4 MB per figure). PNGs need kaleido
and a Chrome/Chromium; without one, the first attempt says how to get PNGs and later ones skip.
INTERP_PNG=0 skips PNGs (the test suite sets it: kaleido takes seconds per figure).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .io import atomic_path, atomic_write

PLOTLY_JS = "plotly.min.js"
PNG_HELP = ("PNG figures need a Chrome or Chromium for kaleido (Debian/Ubuntu: `apt-get install "
            "chromium`; elsewhere: `plotly_get_chrome`); the HTML figures open in any browser, "
            "offline.")

_png_failed: str | None = None  # why the first PNG failed; later figures skip the attempt


def write_plotly_js(folder: Path) -> Path:
    """plotly.js of the installed plotly, in `folder` (rewritten when another version is there)."""
    from plotly.offline import get_plotlyjs

    target = Path(folder) / PLOTLY_JS
    js = get_plotlyjs()
    if not target.is_file() or target.read_text(encoding="utf-8") != js:
        with atomic_write(target) as f:
            f.write(js)
    return target


def save_html(fig, path: str | Path) -> Path:
    """`path` as an HTML page that loads plotly.js from the file beside it, never a network."""
    path = Path(path)
    write_plotly_js(path.parent)
    with atomic_path(path) as tmp:
        fig.write_html(tmp, include_plotlyjs="directory", full_html=True)
    return path


def save_png(fig, path: str | Path) -> Path | None:
    """`path` as a PNG, or None (with one warning per process) when no renderer is available."""
    global _png_failed
    if _png_failed is not None or os.environ.get("INTERP_PNG") == "0":
        return None
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.write_image(tmp, format="png", scale=2)
    except Exception as e:  # no kaleido, no Chrome, or a Chrome that will not start
        _png_failed = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        warnings.warn(f"no PNG figures ({_png_failed}). {PNG_HELP}", stacklevel=2)
        return None
    return path


def save_figure(fig, path: str | Path) -> list[Path]:
    """Write `path`.html always, and `path`.png when a static renderer works."""
    path = Path(path)
    written = [save_html(fig, path.with_suffix(".html"))]
    png = save_png(fig, path.with_suffix(".png"))
    return written + ([png] if png else [])
