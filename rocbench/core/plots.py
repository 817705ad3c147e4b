"""Matplotlib figures from a results frame, driven by each suite's plot specs.

A spec is a dict: file, title, x, y, hue (columns joined into one legend label), facet (one panel per
value), logx/logy. Only rows that passed the gate and were timed are drawn.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or on the device
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def sort_key(value):
    """Numbers in numeric order (16 before 128), then everything else as text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def label(row: pd.Series, columns: list[str]) -> str:
    return " ".join(f"{row[c]}" if c == "backend" else f"{c}={row[c]}" for c in columns)


def line_figure(frame: pd.DataFrame, spec: dict, path: Path) -> bool:
    ys = spec["y"] if isinstance(spec["y"], list) else [spec["y"]]  # a second y is drawn dashed
    data = frame.dropna(subset=[spec["x"], ys[0]])
    if data.empty:
        return False
    facets = sorted(data[spec["facet"]].unique(), key=sort_key) if spec.get("facet") else [None]
    ncols = min(3, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    hue = spec.get("hue", ["backend"])
    for ax, facet in zip(axes.flat, facets):
        part = data if facet is None else data[data[spec["facet"]] == facet]
        part = part.assign(_label=part.apply(lambda r: label(r, hue), axis=1))
        for name, group in part.groupby("_label"):
            group = group.groupby(spec["x"], as_index=False)[ys].median().sort_values(spec["x"])
            line = None
            for y, style in zip(ys, ("-", "--", ":")):
                tag = f" ({y.split('_')[0]})" if len(ys) > 1 else ""
                line, = ax.plot(group[spec["x"]], group[y], marker="o", markersize=3, linestyle=style, label=name + tag,
                                color=None if line is None else line.get_color())
        if spec.get("logx", True):
            ax.set_xscale("log", base=2)
        if spec.get("logy"):
            ax.set_yscale("log")
        if spec.get("hline") is not None:
            ax.axhline(spec["hline"], color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(f"{spec['facet']}={facet}" if facet is not None else spec["title"], fontsize=9)
        ax.set_xlabel(spec.get("xlabel", spec["x"]))
        ax.set_ylabel(spec.get("ylabel", ys[0]))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(facets):]:
        ax.set_visible(False)
    fig.suptitle(spec["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def draw(suite, frame: pd.DataFrame, run_dir: Path) -> list[Path]:
    """Every line plot (passed and timed rows) and heatmap (passed rows) the suite asks for."""
    passed = frame[frame["status"] == "pass"] if "status" in frame else frame
    present = [c for c in ("kernel_us_median", "graph_us_median") if c in passed]
    timed = passed.dropna(subset=present, how="all") if present else passed.iloc[0:0]
    figures = [(line_figure, timed, spec) for spec in suite.plot_specs()]
    figures += [(heatmap_figure, passed, spec) for spec in suite.heatmap_specs()]
    written = []
    for figure, rows, spec in figures:
        needed = {spec.get(k) for k in ("x", "value", "index", "columns", "facet")} - {None}
        needed |= set(spec["y"] if isinstance(spec.get("y"), list) else [spec.get("y")]) - {None}
        if not needed <= set(rows.columns):  # a run written by an older version lacks the column
            continue
        path = Path(run_dir) / spec["file"]
        if figure(rows, spec, path):
            written.append(path)
    return written


def heatmap_figure(frame: pd.DataFrame, spec: dict, path: Path) -> bool:
    """A value (e.g. speedup) over two case axes, one panel per facet value, numbers printed in cells."""
    data = frame
    for column, value in spec.get("where", {}).items():
        data = data[data[column].astype(str) == str(value)]
    data = data.dropna(subset=[spec["value"]])
    if data.empty:
        return False
    facets = sorted(data[spec["facet"]].unique(), key=sort_key) if spec.get("facet") else [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(1.2 + 0.9 * max(3, data[spec["columns"]].nunique()) * len(facets),
                                                      1.5 + 0.45 * max(3, data[spec["index"]].nunique())), squeeze=False)
    for ax, facet in zip(axes.flat, facets):
        part = data if facet is None else data[data[spec["facet"]] == facet]
        table = part.pivot_table(index=spec["index"], columns=spec["columns"], values=spec["value"], aggfunc="median")
        table = table.reindex(index=sorted(table.index, key=sort_key), columns=sorted(table.columns, key=sort_key))
        center = spec.get("center", 1.0)
        # at least +-10% around the center: noise-level differences stay pale instead of saturating the scale
        spread = max(abs(float(table.max().max()) - center), abs(center - float(table.min().min())), 0.1 * abs(center), 1e-3)
        image = ax.imshow(table.values, cmap="RdYlGn", vmin=center - spread, vmax=center + spread, aspect="auto")
        ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(table.index)), [str(i) for i in table.index], fontsize=8)
        ax.set_xlabel(spec["columns"])
        ax.set_ylabel(spec["index"])
        for (i, j), value in pd.DataFrame(table.values).stack().items():
            ax.text(j, i, spec.get("fmt", "{:.2f}").format(value), ha="center", va="center", fontsize=7)
        ax.set_title(f"{spec['facet']}={facet}" if facet is not None else "", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
