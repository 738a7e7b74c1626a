"""``flexigan report``: one self-contained HTML page of what a compiled folder holds.

The page is built from the files the other commands leave in the folder, and from nothing
else: the manifest (model, target, layers, schedule), the last report of each engine and
zero-skipping setting (``sim_runs/``, see :func:`flexigan.folder.sim_run_name`), the pictures
``simulate`` drew, ``synth_report.json`` and ``run_report.json``, and the same of the folders
given to compare with (a ``--no-reorder`` or ``--no-sparse`` compile of the model). Each
section is drawn from its own files; one whose files are missing says so in a line. The charts
are inline SVG (:mod:`flexigan.plots`) and the pictures inline PNG, so the page needs no
network and no file beside it.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import plots
from .errors import UsageError
from .files import atomic_file
from .folder import (
    REPORT_HTML,
    RUN_REPORT,
    SIM_REPORT,
    SIM_RUNS,
    SYNTH_REPORT,
    sim_run_name,
    verify,
)
from .hw.arch.config import AcceleratorConfig

__all__ = ["Sources", "read_sources", "layer_rows", "render", "write_report", "CYCLE_RUNS"]

#: The runs whose cycles the page shows, the first one present: the instruction-level
#: simulator's (it has per-layer figures and the timeline), then the RTL's (which carries them).
CYCLE_RUNS = ("isa", "rtl", "isa-no-sparse", "rtl-no-sparse")


class _Absent(Exception):
    """A section's data is not in the folder: the message says which and how to get it."""


@dataclass(frozen=True)
class Sources:
    """What a compiled folder holds for the page: its ``manifest``, its ``runs`` (report by
    :data:`~flexigan.folder.SIM_RUNS` name without ``.json``), ``synth`` and ``board`` (the
    synthesis and board-run reports, or None), and the ``compared`` folders' Sources."""

    folder: Path
    manifest: dict
    runs: dict
    synth: dict | None = None
    board: dict | None = None
    compared: list = field(default_factory=list)

    @property
    def cycle_run(self):
        """The report whose cycles the page shows (see :data:`CYCLE_RUNS`), or None."""
        return next((self.runs[name] for name in CYCLE_RUNS if name in self.runs), None)

    @property
    def config(self):
        """The :class:`~flexigan.hw.arch.config.AcceleratorConfig` compiled for."""
        return AcceleratorConfig(**self.manifest["config"])

    @property
    def label(self):
        """The folder's compile, in words: lowering and zero skipping."""
        return (("zero-free" if self.manifest["reorder"] else "zero-insertion") + ", sparse "
                + ("on" if self.manifest["sparse"] else "off"))


def _json(path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is damaged ({exc}); run the command that wrote it again") \
            from None


def read_sources(out, compare=()):
    """The :class:`Sources` of the compiled folder ``out`` and of the folders in ``compare``.

    Raises :class:`~flexigan.errors.FolderError` for a folder that is not a compiled one (or
    whose compiled files changed), :class:`UsageError` for a report that does not parse.
    """
    out = Path(out)
    manifest = verify(out)
    runs = {path.stem: _json(path) for path in sorted((out / SIM_RUNS).glob("*.json"))}
    latest = _json(out / SIM_REPORT)
    if latest is not None and not runs:                 # simulated by an older flexigan
        runs[Path(sim_run_name(latest)).stem] = latest
    return Sources(out, manifest, runs, _json(out / SYNTH_REPORT), _json(out / RUN_REPORT),
                   [read_sources(other) for other in compare])


def layer_rows(sources):
    """One row per scheduled layer (a fused op and its activation are one layer): its op,
    shapes and MAC counts from the manifest and, when a run has them, its cycles, bounds,
    utilization and the share of MACs the sparse core skipped."""
    manifest = sources.manifest
    values = {row["name"]: row for row in manifest["layers"]}
    run = sources.cycle_run
    simulated = run["layers"] if run and len(run["layers"]) == len(manifest["schedule"]) \
        else [None] * len(manifest["schedule"])
    rows = []
    for layer, sim in zip(manifest["schedule"], simulated):
        nodes = [values[n] for n in layer["nodes"] if n in values]
        row = {"name": layer["name"], "op": layer["op"],
               "input_shape": nodes[0]["input_shape"] if nodes else None,
               "output_shape": nodes[-1]["output_shape"] if nodes else None,
               **{k: sum(n[k] for n in nodes)
                  for k in ("macs_useful", "macs_phase", "macs_zero_insertion")}}
        if sim:
            bound = max(sim["compute_bound_cycles"], sim["memory_bound_cycles"])
            offered = sim["macs_issued"] + sim["macs_skipped"]
            row.update({k: sim[k] for k in ("cycles", "utilization", "compute_bound_cycles",
                                            "memory_bound_cycles", "dram_bytes",
                                            "macs_issued", "macs_skipped")},
                       bound="memory" if sim["memory_bound_cycles"] > sim["compute_bound_cycles"]
                       else "compute",
                       of_bound=round(sim["cycles"] / bound, 2) if bound else None,
                       skipped_share=round(sim["macs_skipped"] / offered, 4) if offered else 0.0)
        rows.append(row)
    return rows


def write_report(out, compare=()):
    """Write ``out/report.html`` (:mod:`flexigan.report`) atomically; return its path."""
    sources = read_sources(out, compare)
    path = sources.folder / REPORT_HTML
    with atomic_file(path, "w") as f:
        f.write(render(sources))
    return path


# --- the page ------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
figure.chart { margin: 1em 0; } figure.chart svg { max-width: 100%; height: auto; }
p.absent { color: #777; font-style: italic; }
.images { display: flex; gap: 2em; }
.images figure { margin: 0 0 1em 0; flex: 1 1 0; max-width: 480px; }
.images img { image-rendering: pixelated; border: 1px solid #ccc; width: 100%; }
"""


def render(sources):
    """The page of ``sources``, as one HTML document."""
    title = f"flexigan report: {Path(sources.manifest['model']['source']).name}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, draw in _SECTIONS:
        try:
            content = draw(sources)
        except _Absent as exc:
            content = f'<p class="absent">{html.escape(str(exc))}</p>'
        body.append(f"<section><h2>{heading}</h2>\n{content}\n</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _chart(svg):
    return f'<figure class="chart">{svg}</figure>'


def _table(header, rows, table_id=None):
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n"
                   for row in rows)
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _shape(shape):
    return "x".join(map(str, shape)) if shape else ""


def _mega(count):
    return f"{count / 1e6:.3f} M"


def _summary(sources):
    m, config = sources.manifest, sources.manifest["config"]
    facts = [("model", m["model"]["source"]),
             ("inputs", ", ".join(f"{k} {_shape(v['shape'])}"
                                  for k, v in m["model"].get("inputs", {}).items())),
             ("outputs", ", ".join(f"{k} {_shape(v['shape'])}"
                                   for k, v in m["model"].get("outputs", {}).items())),
             ("target", f"{m['target']}: {config['groups']} groups x {config['lanes']} lanes"),
             ("compiled", f"{sources.label}, batch {m['batch']}; steps: "
                          + ", ".join(m["steps"])),
             *(() if "program" not in m else
               (("useful MACs per frame", _mega(m["totals"]["macs_useful"])),
                ("parameters", f"{m['totals']['params']:,}"),
                ("instructions", f"{m['program']['instructions']:,}"))),
             ("runs in the folder", ", ".join(sources.runs) or "none (flexigan simulate)")]
    run = sources.cycle_run
    if run:
        facts += [("cycles per frame", f"{run['cycles'] / run['batch']:,.1f}"),
                  ("utilization", f"{run['utilization']:.1%}"),
                  ("compute / memory bound", f"{run['compute_bound_cycles']:,.0f} / "
                                             f"{run['memory_bound_cycles']:,.0f} cycles")]
    return _table(("", ""), facts)


def _need_cycles(sources):
    if sources.cycle_run is None:
        raise _Absent("No cycles: the folder has no instruction-level or RTL run (flexigan "
                      "simulate OUT --engine isa --input ...).")
    return sources.cycle_run


def _need_program(sources):
    """The :func:`layer_rows`; the compile's program must be there."""
    if "schedule" not in sources.manifest:
        raise _Absent(f"No layers: the compile stopped after {sources.manifest['steps'][-1]}, "
                      "before the program (compile without --stop-after).")
    return layer_rows(sources)


def _layers(sources):
    rows = _need_program(sources)
    header = ["layer", "op", "input", "output", "MACs useful", "MACs phase",
              "MACs zero-ins.", "cycles", "utilization", "bound", "cycles / bound",
              "skipped"]
    cells = [[r["name"], r["op"], _shape(r["input_shape"]), _shape(r["output_shape"]),
              f"{r['macs_useful']:,}", f"{r['macs_phase']:,}", f"{r['macs_zero_insertion']:,}",
              *((f"{r['cycles']:,}", f"{r['utilization']:.1%}", r["bound"], r["of_bound"],
                 f"{r['skipped_share']:.1%}") if "cycles" in r else ("",) * 5)]
             for r in rows]
    note = "" if sources.cycle_run else \
        '<p class="absent">Not simulated: MAC counts only.</p>'
    return _table(header, cells, "layers") + note


def _bounds(sources):
    _need_cycles(sources)
    rows = layer_rows(sources)
    if "cycles" not in rows[0]:
        raise _Absent("The run's layers do not match the schedule: simulate again.")
    return _chart(plots.layer_bars([r["name"] for r in rows], [r["cycles"] for r in rows],
                                   [r["compute_bound_cycles"] for r in rows],
                                   [r["memory_bound_cycles"] for r in rows]))


def _roofline(sources):
    run = _need_cycles(sources)
    config = sources.config
    lanes, axi = config.total_lanes, config.axi_bytes
    # The lanes' work: MACs issued (a MAC the sparse core skipped costs no lane cycle).
    layers = [(r["name"], r["macs_issued"] / r["dram_bytes"] if r["dram_bytes"] else 0,
               r["macs_issued"] / r["cycles"] if r["cycles"] else 0)
              for r in run["layers"]]
    roof = run["roofline"]
    per_frame = run["macs_issued"] / run["batch"]
    batches = [(b["batch"], per_frame / (roof["act_bytes_per_frame"]
                                         + roof["constant_bytes"] / b["batch"]))
               for b in roof["batches"]]
    at = roof["compute_bound_at_batch"]
    line = ("At batch 1 the compute bound dominates." if roof["bound_at_batch_1"] == "compute"
            else "At batch 1 the memory bound dominates; "
            + (f"weights stop dominating at batch {at} (weights loaded once per batch)." if at
               else "activation traffic keeps it memory bound at any batch."))
    return f"<p>{line}</p>" + _chart(plots.roofline(lanes, axi, layers, batches))


def _timeline(sources):
    run = _need_cycles(sources)
    if not run.get("timeline"):
        raise _Absent("The run has no timeline (simulated by an older flexigan): simulate "
                      "again.")
    line = run["timeline"]
    groups = sources.manifest["config"]["groups"]
    names = [layer["name"] for layer in sources.manifest["schedule"]]
    busy = [0] * groups
    for group, start, end, *_ in line["runs"]:
        busy[group] += end - start
    text = (f"<p>The first run of the batch, as the instruction-level model books it: "
            f"{line['cycles']:,} cycles, {len(line['runs']):,} RUNs on {groups} groups, "
            f"{len(line['dmas']):,} DMA transfers. The busiest group is busy "
            f"{max(busy) / line['cycles']:.0%} of the time, the idlest "
            f"{min(busy) / line['cycles']:.0%}.</p>")
    return text + _chart(plots.timeline(groups, line["runs"], line["dmas"], names))


def _simulated_settings(sources):
    """``(label, run report)`` of every zero-skipping setting simulated in the folder and of
    the compared folders' runs."""
    found = []
    for origin in (sources, *sources.compared):
        lowering = "zero-free" if origin.manifest["reorder"] else "zero-insertion"
        for name in CYCLE_RUNS:
            run = origin.runs.get(name)
            label = f"{lowering}, sparse {'on' if run and run['sparse'] else 'off'}"
            if run and label not in (known for known, _ in found):
                found.append((label, run))
    return found


def _settings(sources):
    rows = _need_program(sources)
    names = [r["name"] for r in rows]
    macs = plots.variants(names, {"useful": [r["macs_useful"] for r in rows],
                                  "zero-free (phases)": [r["macs_phase"] for r in rows],
                                  "zero-insertion": [r["macs_zero_insertion"] for r in rows]},
                          "MACs per frame")
    totals = sources.manifest["totals"]
    text = (f"<p>A zero-insertion engine spends {_mega(totals['macs_zero_insertion'])} MACs a "
            f"frame, the zero-free phases {_mega(totals['macs_phase'])}, of which "
            f"{_mega(totals['macs_useful'])} touch a real input.</p>" + _chart(macs))
    found = _simulated_settings(sources)
    if len(found) < 2:
        return text + ('<p class="absent">One setting simulated: for zero skipping off, '
                       "simulate again with --no-sparse; for zero insertion, compile with "
                       "--no-reorder into another folder, simulate it and give it to "
                       "--compare.</p>")
    table = _table(("setting", "cycles per frame", "MACs issued", "MACs skipped",
                    "utilization"),
                   [(label, f"{run['cycles'] / run['batch']:,.1f}", f"{run['macs_issued']:,}",
                     f"{run['macs_skipped']:,}", f"{run['utilization']:.1%}")
                    for label, run in found])
    layers = [[row["name"] for row in run["layers"]] for _, run in found]
    if any(names != layers[0] for names in layers):
        return text + table + '<p class="absent">The settings schedule different layers: ' \
            "no per-layer comparison.</p>"
    per_layer = plots.variants(layers[0], {label: [row["cycles"] for row in run["layers"]]
                                           for label, run in found}, "cycles")
    return text + table + _chart(per_layer)


def _picture(path, folder, caption):
    path = Path(path)
    path = path if path.is_file() else folder / path.name
    if not path.is_file():
        return f'<p class="absent">{html.escape(caption)}: {html.escape(str(path))} is gone.</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _images(sources):
    shown = []
    for name, run in sources.runs.items():
        for output, pictures in run.get("images", {}).items():
            figures = [_picture(pictures["engine"], sources.folder,
                                f"{output}: {name} ({run['batch']} samples)")]
            if "onnxruntime" in pictures:
                figures.append(_picture(pictures["onnxruntime"], sources.folder,
                                        f"{output}: onnxruntime float, same inputs"))
            shown.append(f'<div class="images">{"".join(figures)}</div>')
    if not shown:
        raise _Absent("No pictures: no run of the folder drew an image output (simulate draws "
                      "outputs of shape N x 1 or 3 x H x W).")
    return "".join(shown)


def _sqnr(sources):
    runs = [(name, run) for name, run in sources.runs.items() if "sqnr_db" in run]
    if not runs:
        raise _Absent("No SQNR: no run was compared with onnxruntime (install onnxruntime "
                      "and simulate).")
    table = _table(("run", "samples", "output SQNR (dB)"),
                   [(name, run["batch"], run["sqnr_db"]) for name, run in runs])
    layers = next((run["layers"] for _, run in runs
                   if run["layers"] and "sqnr_db" in run["layers"][0]), None)
    if layers is None:
        return table + ('<p class="absent">No per-layer SQNR: simulate with --engine golden '
                        "(it sees inside the model).</p>")
    return table + _chart(plots.sqnr([r["name"] for r in layers],
                                     [r["sqnr_db"] or 0 for r in layers]))


def _synthesis(sources):
    synth = sources.synth
    if synth is None:
        raise _Absent("No synthesis report: flexigan synth OUT (a folder compiled for a "
                      "board).")
    used = {k: v for k, v in synth["resources"].items() if v["available"]}
    chart = plots.resources(list(used), [v["used"] for v in used.values()],
                            [v["available"] for v in used.values()])
    rows = [(f"Fmax {clock}", f"{mhz:.1f} MHz", f"target {synth['clock_mhz']:.1f} MHz",
             "met" if mhz >= synth["clock_mhz"] else "MISSED")
            for clock, mhz in synth["fmax_mhz"].items()]
    rows.append(("frames/s", f"{synth['frames_per_second']:,}",
                 f"{synth['cycles_per_frame']:,} cycles per frame", ""))
    return (f"<p>{html.escape(synth['device'])}, {synth['groups']} groups, {synth['lanes']} "
            f"lanes.</p>" + _table(("", "", "", ""), rows) + _chart(chart))


def _board_run(sources):
    board = sources.board
    if board is None:
        raise _Absent("No board run: flexigan run OUT --port ... (on a board, or on flexigan "
                      "board-sim).")
    clock = sources.config.clock_mhz
    per_frame = board["cycles"] / board["batch"]
    rows = [("cycles (hardware counter)", f"{board['cycles']:,} for {board['batch']} "
                                          "sample(s)"),
            ("of the instruction-level estimate", f"{board['cycles_vs_isa']:.3f}"),
            ("frames/s", f"{clock * 1e6 / per_frame:,.1f} at {clock:.1f} MHz"),
            ("bit-exact with golden / isa", f"{board['bit_exact_vs_golden']} / "
                                            f"{board['bit_exact_vs_isa']}")]
    return _table(("", ""), rows)


_SECTIONS = [
    ("Model and target", _summary),
    ("Layers", _layers),
    ("Cycles against the bounds", _bounds),
    ("Roofline", _roofline),
    ("Timeline of the engine groups", _timeline),
    ("Zero-free against zero-insertion, sparse on against off", _settings),
    ("Images", _images),
    ("SQNR against onnxruntime", _sqnr),
    ("Synthesis", _synthesis),
    ("Board run", _board_run),
]
