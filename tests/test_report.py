"""``flexigan report`` on compiled and simulated folders: its data, its one-line errors, the
pictures ``simulate`` draws, and the page as headless Chromium (Debian's, which ``make test``
installs as it installs Icarus) renders it."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from flexigan import images, plots
from flexigan.cli import main
from flexigan.report import layer_rows, read_sources
from tests.helpers import EXAMPLES

CHROMIUM = "/usr/bin/chromium"
#: A headless Chromium that talks to nobody (the network is closed here anyway).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def flexigan(*argv):
    assert main([str(a) for a in argv]) == 0, argv


def simulated(folder, samples, *compile_options, engines=("golden", "isa")):
    """``folder`` holding the digits generator compiled with ``compile_options`` and run on
    ``samples`` latents by each of ``engines``."""
    folder.mkdir(parents=True)
    latents = folder.parent / f"{folder.name}-latents.npy"
    np.save(latents, np.random.default_rng(0).standard_normal((samples, 16, 1, 1)))
    flexigan("compile", EXAMPLES / "digits/generator.onnx", "-o", folder, "--no-rtl",
             "--force", *compile_options)
    for engine in engines:
        flexigan("simulate", folder, "--engine", engine, "--input", latents)
    return folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits generator compiled zero-free, run by golden, isa and isa without zero
    skipping; a zero-insertion compile of it beside, run by isa."""
    root = tmp_path_factory.mktemp("report")
    folder = simulated(root / "zero-free", 4)
    flexigan("simulate", folder, "--engine", "isa", "--no-sparse", "--input",
             root / "zero-free-latents.npy", "--output", root / "isa-no-sparse.npy")
    baseline = simulated(root / "zero-insertion", 4, "--no-reorder", engines=("isa",))
    flexigan("report", folder, "--compare", baseline)
    return folder, baseline


def render_in_chromium(page_path, screenshot):
    """Open ``page_path`` in headless Chromium and save a screenshot; return what the page
    showed: its console messages and errors, the requests it made, and per chart the area
    and the number of drawn elements of its SVG or canvas, and the rows of the layer table."""
    messages, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        page.screenshot(path=screenshot, full_page=True)
        charts = page.evaluate("""() => [...document.querySelectorAll('figure.chart')].map(f => {
            const g = f.querySelector('svg, canvas'); const box = g.getBoundingClientRect();
            return {area: box.width * box.height,
                    drawn: g.querySelectorAll('path, rect, use, text').length};})""")
        rows = page.evaluate("document.querySelectorAll('#layers tbody tr').length")
        pictures = page.evaluate("""() => [...document.images].map(
            i => i.complete && i.naturalWidth > 0)""")
        browser.close()
    return {"messages": messages, "requests": requests[1:], "charts": charts, "rows": rows,
            "pictures": pictures}


def test_report_renders_in_chromium(digits, tmp_path):
    folder, _ = digits
    shown = render_in_chromium(folder / "report.html", tmp_path / "report.png")
    assert shown["messages"] == [] and shown["requests"] == []
    # Bars against the bounds, roofline, timeline, MACs and cycles per setting, SQNR.
    assert len(shown["charts"]) == 6
    assert all(c["area"] > 10_000 and c["drawn"] > 10 for c in shown["charts"]), shown
    manifest = json.loads((folder / "manifest.json").read_text())
    assert shown["rows"] == len(manifest["schedule"]) == 3
    assert shown["pictures"] == [True] * 6      # golden, isa, isa without skipping; and float
    assert Image.open(tmp_path / "report.png").size[1] > 3000


def test_report_sections_hold_the_runs(digits):
    folder, _ = digits
    page = (folder / "report.html").read_text()
    for fragment in ("zero-free, sparse on", "zero-free, sparse off",
                     "zero-insertion, sparse on", "weights stop dominating at batch",
                     "No synthesis report", "No board run", "image: onnxruntime float"):
        assert fragment in page
    # Nothing to fetch (XML namespaces are names, not fetched): the browser test counts the
    # requests too.
    for fetch in ('src="http', 'href="http', "url(http", "<script", "<link"):
        assert fetch not in page


def test_layer_rows_join_the_schedule_and_the_run(digits):
    folder, _ = digits
    sources = read_sources(folder)
    rows = layer_rows(sources)
    isa = json.loads((folder / "sim_runs/isa.json").read_text())
    schedule = sources.manifest["schedule"]
    assert [r["name"] for r in rows] == [layer["name"] for layer in schedule]
    # The manifest's per-value MAC counts, summed over each layer's values, are the
    # schedule's.
    assert [r["macs_useful"] for r in rows] == [layer["macs_useful"] for layer in schedule]
    assert sum(r["cycles"] for r in rows) == isa["cycles"]
    assert sum(r["macs_skipped"] for r in rows) == isa["macs_skipped"]
    for row in rows:
        assert row["bound"] == ("memory" if row["memory_bound_cycles"] >
                                row["compute_bound_cycles"] else "compute")
        assert 0 <= row["skipped_share"] < 1
    assert set(sources.runs) == {"golden", "isa", "isa-no-sparse"}


def test_report_of_a_folder_never_simulated_says_what_is_missing(digits, tmp_path):
    folder = tmp_path / "bare"
    shutil.copytree(digits[0], folder, ignore=shutil.ignore_patterns(
        "sim_runs", "sim_report.json", "report.html", "output*"))
    flexigan("report", folder)
    page = (folder / "report.html").read_text()
    assert page.count("No cycles: the folder has no instruction-level or RTL run") == 3
    assert "Not simulated: MAC counts only." in page and "No pictures" in page
    assert page.count('<tr><td>') >= 3


def test_report_of_a_compile_stopped_before_the_program_shows_its_golden_run(tmp_path):
    folder = simulated(tmp_path / "quantized", 2, "--stop-after", "quantize",
                       engines=("golden",))
    flexigan("report", folder)
    page = (folder / "report.html").read_text()
    assert page.count("No layers: the compile stopped after quantize, before the program") == 2
    assert page.count("No cycles") == 3
    assert "image: golden (2 samples)" in page and "SQNR (dB)" in page


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"flexigan: error: {tmp_path} is not a compiled model folder (no "
                   "manifest.json); run `flexigan compile` first"]


def test_report_names_a_damaged_run_report(digits, tmp_path, capsys):
    folder = tmp_path / "damaged"
    shutil.copytree(digits[0], folder)
    (folder / "sim_runs/isa.json").write_text("{")
    assert main(["report", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sim_runs/isa.json is damaged" in err[0]


def test_a_forced_compile_replaces_the_runs_pictures_and_page(digits, tmp_path):
    folder = tmp_path / "again"
    shutil.copytree(digits[0], folder)
    assert {"sim_runs", "report.html", "output.png", "output-onnxruntime.png"} <= \
        {p.name for p in folder.iterdir()}
    flexigan("compile", EXAMPLES / "digits/generator.onnx", "-o", folder, "--no-rtl", "--force",
             "--stop-after", "import")
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "steps"]


def test_simulate_draws_the_images_beside_the_output(digits):
    folder, _ = digits
    report = json.loads((folder / "sim_runs/golden.json").read_text())
    pictures = report["images"]["image"]
    drawn = np.asarray(Image.open(pictures["engine"]))
    assert pictures["engine"] == str(folder / "output.png")
    # Written for the golden run, and redrawn by the isa run (bit-exact: the same picture).
    np.testing.assert_array_equal(drawn, images.grid(np.load(folder / "output.npy")))
    assert drawn.shape == (2 * 65 + 1, 2 * 65 + 1)      # 2 x 2 digits of 8 x 8 pixels, x 8
    assert Image.open(pictures["onnxruntime"]).size == drawn.shape[::-1]


def test_a_large_timeline_is_one_picture_inside_its_svg():
    # Thousands of RUNs as SVG elements would make a page of megabytes.
    names = [f"layer {i}" for i in range(4)]
    small = plots.timeline(2, [[g, 10 * i, 10 * i + 8, i % 4, 1] for i in range(10)
                               for g in range(2)], [[0, 5, 0, "WGT", False]], names)
    runs = [[g, 10 * i, 10 * i + 8, i % 4, 0] for i in range(plots.VECTOR_BARS // 2 + 1)
            for g in range(2)]
    large = plots.timeline(2, runs, [[0, 5, 0, "WGT", False]], names)
    assert "<image" not in small and small.count("<path") > 20
    assert large.count("<image") == 1 and len(large) < 500_000


def test_image_grid_tiles_grey_and_rgb_images():
    grey = np.linspace(-1, 1, 5 * 4 * 4).reshape(5, 1, 4, 4)
    tiled = images.grid(grey, columns=3, zoom=2, pad=1)
    assert tiled.shape == (2 * 9 + 1, 3 * 9 + 1) and tiled.dtype == np.uint8
    assert tiled[1, 1] == 0 and tiled[-2, 9 + 8] == 255     # -1 black, +1 white
    rgb = np.full((2, 3, 3, 3), 0.5)                          # no negative value: [0, 1]
    assert images.grid(rgb, zoom=1).shape == (4 + 1, 2 * 4 + 1, 3)
    assert images.grid(rgb, zoom=1)[1, 1].tolist() == [128] * 3
    assert not images.is_image((4, 2, 8, 8)) and not images.is_image((4, 16))
    with pytest.raises(ValueError, match=r"must be of shape \(N, 1 or 3, H, W\), not"):
        images.grid(np.zeros((2, 5, 4, 4)))


@pytest.mark.slow
def test_dcgan64_generator_report_renders_every_element(tmp_path):
    # The acceptance: DCGAN-64's generator compiled, run by golden and isa (sparse on and off),
    # beside its zero-insertion compile, reported and rendered offline.
    dcgan = EXAMPLES / "dcgan64/generator.onnx"
    latents = tmp_path / "z.npy"
    np.save(latents, np.random.default_rng(0).standard_normal((2, 100, 1, 1)))
    folders = {}
    for name, options in (("zero-free", ()), ("zero-insertion", ("--no-reorder",))):
        folders[name] = tmp_path / name
        flexigan("compile", dcgan, "-o", folders[name], "--no-rtl", *options)
        flexigan("simulate", folders[name], "--engine", "isa", "--input", latents)
    folder = folders["zero-free"]
    flexigan("simulate", folder, "--engine", "golden", "--input", latents)
    flexigan("simulate", folder, "--engine", "isa", "--no-sparse", "--input", latents,
             "--output", tmp_path / "dense.npy")
    flexigan("report", folder, "--compare", folders["zero-insertion"])
    shown = render_in_chromium(folder / "report.html", tmp_path / "report.png")
    assert shown["messages"] == [] and shown["requests"] == []
    assert len(shown["charts"]) == 6
    assert all(c["area"] > 10_000 and c["drawn"] > 10 for c in shown["charts"]), shown
    assert shown["rows"] == 5                           # 4 ConvTransposes and the image layer
    assert shown["pictures"] == [True] * 6
    page = (folder / "report.html").read_text()
    for fragment in ("zero-insertion, sparse on", "zero-free, sparse off", "RUNs on 16 groups",
                     "image: onnxruntime float", "image 3x64x64"):
        assert fragment in page
