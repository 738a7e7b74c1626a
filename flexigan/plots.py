"""The charts of ``flexigan report``, drawn by matplotlib as inline SVG.

Each function takes plain numbers (what :mod:`flexigan.report` read from the folder) and
returns one ``<svg>`` element as text: no file, no global pyplot state, no font or script to
fetch when the page is viewed (text stays text, in the viewer's sans-serif font).
"""

from __future__ import annotations

import functools
import io

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["layer_bars", "roofline", "timeline", "variants", "sqnr", "resources"]

#: The look every chart shares; the hash salt makes the SVG the same from run to run.
_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "flexigan", "font.size": 9,
          "axes.spines.top": False, "axes.spines.right": False}
_WIDTH = 9.0                                   # inches: the page's width at 100 dpi
#: Bars of a timeline above which it is drawn as one picture inside the SVG (a RUN as an SVG
#: element each would make a page of megabytes for a large model).
VECTOR_BARS = 5000
#: Legend entries per column.
_LEGEND_ROWS = 25
#: Layers in strong colours, the DMA engine's memories in pale ones.
_LAYERS = matplotlib.colormaps["tab10"].colors
_SPACES = matplotlib.colormaps["Pastel2"].colors


def _chart(draw):
    """A chart function: ``draw`` runs in the shared style and returns a figure, which leaves
    as one ``<svg>`` element (without the XML prologue)."""

    @functools.wraps(draw)
    def chart(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            figure = draw(*args, **kwargs)
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None},
                           dpi=150)               # the resolution of a rasterized timeline
        text = buffer.getvalue()
        return text[text.index("<svg"):]

    return chart


def _figure(height):
    figure = Figure(figsize=(_WIDTH, height), layout="constrained")
    return figure, figure.add_subplot()


@_chart
def layer_bars(names, cycles, compute, memory):
    """Per layer, the simulated cycles beside the compute and the memory bound."""
    figure, axes = _figure(3.2)
    x, width = np.arange(len(names)), 0.27
    for offset, values, label, color in ((-width, cycles, "simulated cycles", "#1f77b4"),
                                         (0, compute, "compute bound", "#2ca02c"),
                                         (width, memory, "memory bound", "#d62728")):
        axes.bar(x + offset, values, width, label=label, color=color)
    axes.set_xticks(x, names, rotation=30, ha="right")
    axes.set_ylabel("cycles")
    axes.set_yscale("symlog", linthresh=10)
    axes.legend(frameon=False, ncols=3, loc="lower left", bbox_to_anchor=(0, 1))
    return figure


@_chart
def roofline(lanes, axi_bytes, layers, batches):
    """The roofline of the machine: attainable MACs per cycle against arithmetic intensity
    (MACs the lanes issue per external byte), ``min(lanes, intensity * axi_bytes)``.

    ``layers`` are ``(name, intensity, achieved MACs per cycle)``; ``batches`` are
    ``(batch, intensity)`` of a whole frame with its weights loaded once per batch: they reach
    the flat part of the roof from the batch on which weights stop dominating.
    """
    figure, axes = _figure(3.6)
    intensities = [i for _, i, _ in layers if i > 0] + [i for _, i in batches if i > 0]
    knee = lanes / axi_bytes
    span = np.geomspace(min(intensities + [knee]) / 4, max(intensities + [knee]) * 4, 200)
    axes.plot(span, np.minimum(lanes, span * axi_bytes), color="black", label="roof")
    axes.axvline(knee, color="grey", linestyle=":", linewidth=1)
    for index, (name, intensity, achieved) in enumerate(layers):
        if intensity > 0:
            axes.scatter(intensity, max(achieved, 1e-3), color=_LAYERS[index % 10], zorder=3,
                         label=name)
    for batch, intensity in batches:
        attainable = min(lanes, intensity * axi_bytes)
        axes.scatter(intensity, attainable, marker="x", color="black", zorder=3)
        axes.annotate(f"batch {batch}", (intensity, attainable), fontsize=7,
                      textcoords="offset points", xytext=(3, -10))
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("arithmetic intensity (MACs issued per external byte)")
    axes.set_ylabel("MACs issued per cycle")
    axes.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                ncols=1 + len(layers) // _LEGEND_ROWS)
    return figure


@_chart
def timeline(groups, runs, dmas, layer_names):
    """One row per engine group (its RUNs, coloured by layer, the stall cycles of each in
    black at its end) and one for the DMA engine (its transfers, by memory)."""
    figure, axes = _figure(max(2.5, 0.22 * (groups + 1) + 1.2))
    raster = len(runs) + len(dmas) > VECTOR_BARS
    for group in range(groups):
        mine = [r for r in runs if r[0] == group]
        axes.broken_barh([(start, end - start) for _, start, end, _, _ in mine], (group, 0.8),
                         facecolors=[_LAYERS[layer % 10] for *_, layer, _ in mine],
                         rasterized=raster)
        stalls = [(end - stall, stall) for _, _, end, _, stall in mine if stall]
        if stalls:
            axes.broken_barh(stalls, (group, 0.8), facecolors="black", rasterized=raster)
    spaces = sorted({space for *_, space, _ in dmas})
    axes.broken_barh([(start, end - start) for start, end, *_ in dmas], (groups, 0.8),
                     facecolors=[_SPACES[spaces.index(space) % 8]
                                 for *_, space, _ in dmas], rasterized=raster)
    axes.set_yticks(np.arange(groups + 1) + 0.4, [f"group {g}" for g in range(groups)]
                    + ["DMA"])
    axes.invert_yaxis()
    axes.set_xlabel("cycle")
    used = sorted({layer for *_, layer, _ in runs})
    handles = [Patch(color=_LAYERS[i % 10], label=layer_names[i]) for i in used]
    handles += [Patch(color="black", label="crossbar stall")]
    handles += [Patch(color=_SPACES[i % 8], label=f"DMA {space}")
                for i, space in enumerate(spaces)]
    axes.legend(handles=handles, frameon=False, fontsize=7, loc="upper left",
                bbox_to_anchor=(1.0, 1.0), ncols=1 + len(handles) // _LEGEND_ROWS)
    return figure


@_chart
def variants(names, series, ylabel):
    """Grouped bars per layer, one bar per ``series`` entry (label -> values)."""
    figure, axes = _figure(3.0)
    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    for index, (label, values) in enumerate(series.items()):
        axes.bar(x + (index - (len(series) - 1) / 2) * width, values, width, label=label,
                 color=_LAYERS[index % 10])
    axes.set_xticks(x, names, rotation=30, ha="right")
    axes.set_ylabel(ylabel)
    axes.legend(frameon=False, ncols=len(series), loc="lower left", bbox_to_anchor=(0, 1))
    return figure


@_chart
def sqnr(names, values):
    """Per layer, the SQNR of the int8 model against onnxruntime's float one."""
    figure, axes = _figure(2.6)
    axes.bar(np.arange(len(names)), values, color="#9467bd")
    axes.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("SQNR (dB)")
    return figure


@_chart
def resources(names, used, available):
    """Horizontal bars: each resource's share of the device."""
    figure, axes = _figure(0.35 * len(names) + 0.8)
    shares = [100 * u / a for u, a in zip(used, available)]
    axes.barh(names, shares, color=["#d62728" if s > 100 else "#1f77b4" for s in shares])
    for y, (share, u, a) in enumerate(zip(shares, used, available)):
        axes.annotate(f"{u:,} / {a:,}", (share, y), textcoords="offset points",
                      xytext=(4, -3), fontsize=7)
    axes.set_xlim(0, max(100, *shares) * 1.15)
    axes.set_xlabel("% of the device")
    axes.invert_yaxis()
    return figure
