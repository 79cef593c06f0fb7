import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser

import plotly.graph_objects as go
import pytest

from interp.common import figures


class Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []
        self.inline = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "link", "img", "iframe"):
            attrs = dict(attrs)
            src = attrs.get("src") or attrs.get("href")
            if src:
                self.sources.append(src)
            elif tag == "script":
                self.inline += 1


def figure():
    return go.Figure(go.Heatmap(z=[[0, 1], [2, 3]]), layout={"title": "offline"})


@pytest.mark.smoke
def test_html_figures_load_plotly_from_beside_them_not_a_network(tmp_path):
    written = figures.save_figure(figure(), tmp_path / "sub" / "trace")
    html = tmp_path / "sub" / "trace.html"
    assert written[0] == html
    page = Scripts()
    page.feed(html.read_text())
    remote = [s for s in page.sources if re.match(r"^(https?:)?//", s)]
    assert not remote, f"the figure loads {remote} from a network: it opens blank offline"
    assert page.sources == [figures.PLOTLY_JS]
    js = tmp_path / "sub" / figures.PLOTLY_JS
    from plotly.offline import get_plotlyjs

    assert js.read_text() == get_plotlyjs()  # the local bundle is the whole of plotly.js
    # A second figure in the same folder shares it; nothing half-written is left behind.
    figures.save_html(figure(), tmp_path / "sub" / "other.html")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir() if p.suffix != ".png") == [
        "other.html", figures.PLOTLY_JS, "trace.html"]


def test_a_stale_plotly_js_is_replaced(tmp_path):
    (tmp_path / figures.PLOTLY_JS).write_text("/* plotly.js of another version */")
    figures.save_html(figure(), tmp_path / "f.html")
    assert "another version" not in (tmp_path / figures.PLOTLY_JS).read_text()


def test_without_a_png_renderer_html_is_written_and_the_help_is_said_once(tmp_path, monkeypatch):
    def no_chrome(*a, **k):
        raise RuntimeError("Kaleido requires Google Chrome to be installed.")

    monkeypatch.setattr(go.Figure, "write_image", no_chrome)
    monkeypatch.setattr(figures, "_png_failed", None)
    monkeypatch.delenv("INTERP_PNG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = figures.save_figure(figure(), tmp_path / "a")
        second = figures.save_figure(figure(), tmp_path / "b")
    assert [p.name for p in first + second] == ["a.html", "b.html"]
    said = [str(w.message) for w in caught if "PNG" in str(w.message)]
    assert len(said) == 1 and "apt-get install chromium" in said[0]
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium")
def test_with_chromium_the_png_is_written_and_the_html_renders_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "_png_failed", None)
    monkeypatch.delenv("INTERP_PNG")
    written = figures.save_figure(figure(), tmp_path / "fig")
    assert tmp_path / "fig.png" in written and (tmp_path / "fig.png").stat().st_size > 1000
    # Headless Chromium with the network shut: the page draws plotly's SVG all the same.
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000", "--dump-dom",
         (tmp_path / "fig.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "main-svg" in dom
