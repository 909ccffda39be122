"""`netc report` (issue 13): one self-contained HTML page from real run and
search folders; every figure an embedded PNG that decodes; strings from a run
folder escaped; the missing-matplotlib message; and the page opened in a real
headless browser (every image loads), skipped with the reason without chromium."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from netc.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from problems import make_problem  # noqa: E402

try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (pip install 'netc[report]')")

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"

SPEC = """\
input  x : [16]
target t : class(3)

h = dense(x, 8, act = tanh)
r = dense(h, 5, act = relu)
y = dense(r, 3)

loss = nll(softmax(y), t)

data {
    train = npz("tiny.npz")[0:120]
    valid = npz("tiny.npz")[120:160]
    test  = npz("tiny.npz")[160:200]
}

train {
    method = sgd(lr = 0.05)
    batch  = 16
    epochs = 3
    stats  = 1
}
"""

SPACE = """\
input  x : [16]
target t : class(3)

h = dense(x, 8, act = tanh)
y = dense(h, 3)

loss = nll(softmax(y), t)

data {
    train = npz("tiny.npz")[0:150]
    valid = npz("tiny.npz")[150:200]
}

train {
    method = sgd(lr = loguniform(1e-3, 1e-1), momentum = choice(0, 0.5, 0.9))
    batch  = choice(8, 16, 32)
    epochs = 1
}

search {
    trials  = 3
    metric  = valid.error
    workers = 1
}
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """Two 3-epoch runs (seeds 0 and 3, per-layer statistics on) and a 3-trial search."""
    root = tmp_path_factory.mktemp("report")
    x, t = make_problem(n=200, features=16)
    np.savez(root / "tiny.npz", x=x, t=t)
    (root / "tiny.net").write_text(SPEC)
    (root / "space.net").write_text(SPACE)
    for name, seed in (("run_a", "0"), ("run_b", "3")):
        assert main(["train", str(root / "tiny.net"), "--out", str(root / name), "--seed", seed]) == 0
    assert main(["search", str(root / "space.net"), "--out", str(root / "search")]) == 0
    return root


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def images(page: str) -> list[bytes]:
    """The decoded PNG of every <img>; fails on any that is not a non-empty base64 PNG data URI."""
    p = _Images()
    p.feed(page)
    out = []
    for src in p.srcs:
        head = "data:image/png;base64,"
        assert src.startswith(head), src[:60]
        data = base64.b64decode(src[len(head):], validate=True)
        assert data.startswith(PNG) and len(data) > 200
        out.append(data)
    return out


@pytest.fixture(scope="module")
def page_file(made) -> Path:
    """The report of both runs and the search, written once for the module."""
    out = made / "all.html"
    assert main(["report", str(made / "run_a"), str(made / "run_b"), str(made / "search"), "--out", str(out)]) == 0
    return out


@needs_mpl
def test_runs_and_a_search_in_one_page(page_file):
    page = page_file.read_text()
    pngs = images(page)
    # curves (once), and per run: statistics, filters (16 = 4 x 4), 3 Hinton diagrams, weight and
    # activation histograms; the search: best-so-far and the scatter plots
    assert len(pngs) == 1 + 2 * (1 + 1 + 3 + 1 + 1) + 2
    from PIL import Image  # matplotlib's own dependency
    import io
    for data in pngs:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    for text in ("Learning curves", "Per-layer statistics", "First-layer filters", "Hinton diagrams",
                 "Weights at the end", "Activations at the end", "on the first 40 examples of the validation set",
                 "Search search", "best trial", "loguniform(0.001, 0.1)", "run_b"):
        assert text in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # self-contained


@needs_mpl
def test_default_out_is_the_first_run(made, capsys):
    assert main(["report", str(made / "run_a")]) == 0
    assert "run_a/report.html" in capsys.readouterr().out
    page = (made / "run_a" / "report.html").read_text()
    assert len(images(page)) == 8


def _hostile_run(made: Path, name: str) -> Path:
    run = made / name
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(made / "run_a", run)
    lines, hostile = [], 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "layers" in row:  # statistics are taken at some epochs only (runtime/stats.py)
            row["layers"][HOSTILE] = row["layers"].pop("h")
            row["params"]["$\\frac{x}{" + HOSTILE] = row["params"].pop("h.W")  # mathtext in a label: drawn as text
            hostile += 1
        lines.append(json.dumps(row))
    assert hostile, "no row with statistics to make hostile"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n{cut short")
    summary = json.loads((run / "summary.json").read_text())
    summary["spec"] = HOSTILE
    summary[HOSTILE] = f"\"'{HOSTILE}"
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@needs_mpl
def test_strings_from_the_run_folder_are_escaped(made):
    run = _hostile_run(made, "<b>x</b>")
    out = made / "hostile.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    p = _Images()
    p.feed(page)
    assert set(p.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table",
                           "tr", "th", "td", "img", "div"}
    assert len(images(page)) == 8


@needs_mpl
def test_a_damaged_checkpoint_still_gives_the_curves(made):
    run = made / "damaged"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(made / "run_a", run)
    (run / "params.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "could not be read" in page and len(images(page)) == 2  # curves and statistics, no weights


@needs_mpl
def test_without_its_data_a_run_still_reports_its_weights(made):
    """A run trained on arrays (the API), and one whose data moved: no activations, said why."""
    import netc
    x, t = make_problem(n=60, features=16)
    netc.compile(made / "tiny.net").fit(x, t, epochs=1, out=made / "arrays")
    moved = made / "moved"
    if moved.exists():
        shutil.rmtree(moved)
    shutil.copytree(made / "run_a", moved)
    record = json.loads((moved / "run.json").read_text())
    record["base"] = str(made / "gone")
    (moved / "run.json").write_text(json.dumps(record))
    for run, why in (("arrays", "not trained on its spec&#x27;s data block"), ("moved", "no activations: ")):
        assert main(["report", str(made / run)]) == 0
        page = (made / run / "report.html").read_text()
        assert why in page and "Activations at the end" not in page and len(images(page)) == 7


@needs_mpl
def test_a_damaged_search_folder_with_hostile_names(tmp_path):
    """Failed trials, a line cut short, names and values from the user: drawn, counted, escaped."""
    folder = tmp_path / "s"
    folder.mkdir()
    space = {"method.lr": "loguniform(0.001, 0.1)", HOSTILE: "choice(a, b)", "batch": "uniform(8, 64)"}
    (folder / "search.json").write_text(json.dumps({"metric": HOSTILE, "space": space}))
    recs = [{"trial": k, "status": "ok", "metric": m, "sampled": {"method.lr": lr, HOSTILE: f"<i>{k % 2}", "batch": 8 * k}}
            for k, m, lr in ((1, 0.3, 0.002), (2, 0.1, 0.05), (4, 0.2, 0.01))]
    recs.append({"trial": 3, "status": "failed", "metric": None, "sampled": {}, "error": HOSTILE})
    (folder / "trials.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + '\n{"trial": 5, "sta')
    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert "<script" not in page and "<i>" not in page and "&lt;i&gt;0" in page  # the best trial's value
    assert "&lt;script&gt;" in page and len(images(page)) == 2
    for row in ("<th>failed</th><td>1</td>", "<th>ok</th><td>3</td>", "<th>best trial</th><td>2</td>",
                "<th>unreadable lines in trials.jsonl</th><td>1</td>"):
        assert row in page


def test_searched_ranges_are_read_from_their_text():
    from netc.report import _is_log, _range
    assert _is_log("loguniform(0.001, 0.1)") and _is_log("uniform(1, 10, log = true)")
    assert not _is_log("uniform(1, 10)") and not _is_log("choice(1, 2)")
    assert _range("loguniform(0.001, 0.1)") == (0.001, 0.1) and _range("int(8, 64)") == (8.0, 64.0)
    assert _range("choice(1, 2)") is None and _range("uniform(nan, 1)") is None and _range("") is None


def test_not_a_run_folder_is_a_user_error(tmp_path, capsys):
    if not HAVE_MPL:
        pytest.skip("matplotlib is not installed")
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_without_matplotlib_the_message_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert main(["report", str(tmp_path)]) == 2
    assert "pip install 'netc[report]'" in capsys.readouterr().err


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


PROBE = ("<script>window.addEventListener('load', () => { const i = [...document.images]; document.title = "
         "'loaded ' + i.filter(x => x.complete && x.naturalWidth > 0).length + ' of ' + i.length; });</script>")


@needs_mpl
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (apt-get install chromium) for the browser check")
def test_the_page_renders_in_a_headless_browser(page_file, tmp_path):
    page = page_file.read_text()
    n = len(images(page))
    probe = tmp_path / "probe.html"  # the report itself has no script: the probe adds one, nothing else
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}"]
    dom = subprocess.run(flags + ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert f"<title>loaded {n} of {n}</title>" in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2000", page_file.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes().startswith(PNG)
