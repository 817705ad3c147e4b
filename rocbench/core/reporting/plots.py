"""Matplotlib figures from a results frame, driven by each suite's plot specs.

A line spec: file, title, x (a column, or candidates in order: the first that varies in the run is the x axis;
`along` names the axes the first one stands for, e.g. shape for bytes), y (one column, or several drawn solid/dashed/dotted), ylabel, facet (one panel per value), logy, hline. Every
line is one real series: the rows of one backend and one value of every other axis that varies, so no point is
an aggregate of different cases. When no candidate x varies, each row is one bar instead, grouped by case with a
colour per backend.
A heatmap spec: file, title, index, columns, value, where (rows kept), ratio (a speedup: log colour scale centred
at 1x), center/fmt otherwise; one panel per combination of the other axes that vary.
Only rows that passed the gate (and, for lines, were timed) are drawn.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or on the device
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402

MAX_PANELS = 12
RATIO_TICKS = (1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 4, 8)
LEGEND = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0.0)  # outside the data


def sort_key(value):
    """Numbers in numeric order (16 before 128), shapes by their dimensions (8x7168 before 64x7168), then text."""
    text = str(value)
    if re.fullmatch(r"\d+(x\d+)+", text):
        dims = [int(d) for d in text.split("x")]
        return (0, math.prod(dims), tuple(dims), "")
    try:
        return (0, float(value), (), "")
    except (TypeError, ValueError):
        return (1, 0.0, (), text)


def numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns whose every value is a number, as numbers (a run's rows hold case values as text until read back)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype).startswith(("str", "string")):
            converted = pd.to_numeric(out[column], errors="coerce")
            if converted.notna().sum() == out[column].notna().sum() and out[column].notna().any():
                out[column] = converted
    return out


def varying(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if c in frame and frame[c].astype(str).nunique() > 1]


SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8", "float8_e4m3fnuz": "fp8 fnuz",
         "float8_e5m2": "fp8 e5m2", "True": "yes", "False": "no"}


def label(row: pd.Series, columns: list[str]) -> str:
    return " ".join(f"{row[c]}" if c == "backend" else f"{c}={SHORT.get(str(row[c]), row[c])}" for c in columns) or "all"


def shared_legend(fig, grid) -> None:
    """One legend for every panel (their series are the same), outside the data, right of the figure."""
    handles: dict[str, object] = {}
    for ax in grid:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)


LINE_STYLES = (("-", "solid"), ("--", "dashed"), (":", "dotted"))


def time_of(column: str) -> str:
    """Which time a column was computed from (kernel_us_median, speedup_vs_torch_graph, ...), else its name."""
    return next((t for t in ("kernel", "graph") if t in column.split("_")), column)


def drawn_title(spec: dict, ys: list[str], styled: bool) -> str:
    """The spec's title and, for a figure of several times, the ones it draws: both with their line styles, or the
    one a run took (--times kernel), so that the title never names a line the figure lacks."""
    if not isinstance(spec["y"], list):
        return spec["title"]
    if len(ys) == 1:
        return f"{spec['title']}, {time_of(ys[0])} time"
    parts = [f"{time_of(y)} ({name})" if styled else time_of(y) for y, (_, name) in zip(ys, LINE_STYLES)]
    return f"{spec['title']}, {' and '.join(parts)}"


def y_columns(spec: dict, data: pd.DataFrame) -> list[str]:
    ys = spec["y"] if isinstance(spec["y"], list) else [spec["y"]]
    ys = [y for y in ys if y in data and data[y].notna().any()]
    if spec.get("logy"):  # a log axis takes positive values only
        ys = [y for y in ys if (data[y] > 0).any()]
    return ys


def panels(data: pd.DataFrame, facet: str | None) -> list[tuple[str | None, pd.DataFrame]]:
    if not facet or facet not in data:
        return [(None, data)]
    return [(f"{facet}={SHORT.get(str(value), value)}", data[data[facet] == value])
            for value in sorted(data[facet].unique(), key=sort_key)][:MAX_PANELS]


def figure_grid(count: int, width: float, height: float):
    ncols = min(2, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def finish(fig, title: str, path: Path) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legends outside the axes are kept
    plt.close(fig)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def series_styles(data: pd.DataFrame, hue: list[str]):
    """A line's colour and marker from its row: a colour per backend and a marker per value of the other hue columns
    (ctx_dist x kv_dtype, ...) where backends are compared, else a colour per series; tab20 past 10 colours, so that
    no two series share both (the line style tells the times apart)."""
    by_backend = "backend" in hue and len(hue) > 1
    colour_cols = ["backend"] if by_backend else hue
    marker_cols = [c for c in hue if c != "backend"] if by_backend else []

    def keys(columns):
        return list(dict.fromkeys(tuple(row) for row in data[columns].itertuples(index=False))) if columns else [()]

    colours, markers = keys(colour_cols), keys(marker_cols)
    palette = plt.get_cmap("tab10" if len(colours) <= 10 else "tab20").colors

    def colour_of(row: pd.Series):
        return palette[colours.index(tuple(row[c] for c in colour_cols)) % len(palette)]

    def marker_of(row: pd.Series) -> str:
        return MARKERS[markers.index(tuple(row[c] for c in marker_cols)) % len(MARKERS)]

    return colour_of, marker_of


def log_axes(ax, x_values: pd.Series | None, logy: bool) -> None:
    """x on a log2 scale where given, y on a log10 one where asked, both labelled in plain numbers: 8, 16, 32 rather
    than 2^3 (sizes from 2^16 up keep 2^k), 60 us rather than 6 x 10^1; minor y ticks labelled where y spans under a
    decade."""
    if x_values is not None:
        ax.set_xscale("log", base=2)
        if x_values.max() < 2 ** 16:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    if logy:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def line_figure(frame: pd.DataFrame, spec: dict, path: Path, axes: list[str]) -> bool:
    ys = y_columns(spec, frame)
    if not ys:
        return False
    data = frame.dropna(subset=[ys[0]])
    candidates = spec["x"] if isinstance(spec["x"], list) else [spec["x"]]
    x = next((c for c in candidates if c in data and data[c].nunique() > 1), None)
    if x is None:
        return bar_figure(data, spec, path, axes, ys)
    facet = spec.get("facet") if spec.get("facet") in varying(data, axes) else None
    along = spec.get("along", []) if x == candidates[0] else []  # axes the x column stands for (bytes: shape)
    hue = [c for c in varying(data, ["backend", *axes]) if c not in (x, facet, *along)]
    chosen = panels(data, facet)
    colour_of, marker_of = series_styles(data, hue)
    fig, grid = figure_grid(len(chosen), 4.6, 3.4)
    for ax, (title, part) in zip(grid, chosen):
        for _, group in (part.groupby(hue, sort=False) if hue else [((), part)]):
            group = group.sort_values(x)
            first = group.iloc[0]
            for y, (style, _) in zip(ys, LINE_STYLES):
                tag = f" ({time_of(y)})" if len(ys) > 1 else ""
                ax.plot(group[x], group[y], marker=marker_of(first), markersize=4, linestyle=style,
                        label=label(first, hue) + tag, color=colour_of(first))
        log_axes(ax, part[x] if spec.get("logx", True) and (part[x] > 0).all() else None, bool(spec.get("logy")))
        if spec.get("hline") is not None:
            ax.axhline(spec["hline"], color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(title or "", fontsize=9)
        ax.set_xlabel(spec.get("xlabel") if x == candidates[0] and spec.get("xlabel") else x)
        ax.set_ylabel(spec.get("ylabel", ys[0]))
        ax.grid(True, which="both", alpha=0.3)
    shared_legend(fig, grid[:len(chosen)])
    finish(fig, drawn_title(spec, ys, styled=True), path)
    return True


def bar_figure(data: pd.DataFrame, spec: dict, path: Path, axes: list[str], ys: list[str]) -> bool:
    """No x axis varies: one group of bars per case (the axes that tell the rows apart, the backend aside), one bar
    per backend and time in it, a colour per backend and a hatch per time, so that backends read side by side."""
    names = varying(data, ["backend", *axes]) or ["backend"]
    data = data.sort_values([c for c in names if c in data], key=lambda col: col.map(sort_key))
    by_backend = "backend" in names and len(names) > 1  # else each row is its own case (one backend, or only backends)
    case_of = [c for c in names if c != "backend"] if by_backend else names
    cases = list(dict.fromkeys(label(row, case_of) for _, row in data.iterrows()))
    backends = list(dict.fromkeys(data["backend"])) if by_backend else [None]
    series = [(backend, y) for backend in backends for y in ys]
    width = 0.8 / len(series)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(cases) * len(series) + 2), 4.0))
    for i, (backend, y) in enumerate(series):
        rows = data if backend is None else data[data["backend"] == backend]
        heights = dict(zip((label(row, case_of) for _, row in rows.iterrows()), rows[y]))
        tag = " ".join(t for t in (backend, time_of(y) if len(ys) > 1 else None) if t)
        ax.bar([k + i * width for k in range(len(cases))], [heights.get(case, math.nan) for case in cases],
               width=width, color=colours[backends.index(backend) % len(colours)],
               hatch="//" if ys.index(y) else None, edgecolor="white", label=tag or None)
    ax.set_xticks([k + width * (len(series) - 1) / 2 for k in range(len(cases))], cases, rotation=45, ha="right",
                  fontsize=7)
    ax.set_ylabel(spec.get("ylabel", ys[0]))  # linear: a bar's length is its value
    if spec.get("hline") is not None:
        ax.axhline(spec["hline"], color="grey", linestyle="--", linewidth=0.8)
    if len(series) > 1:
        ax.legend(**LEGEND)
    ax.grid(True, axis="y", alpha=0.3)
    finish(fig, drawn_title(spec, ys, styled=False), path)
    return True


def draw(suite, frame: pd.DataFrame, run_dir: Path) -> list[Path]:
    """Every line plot (passed and timed rows) and heatmap (passed rows) the suite asks for."""
    axes = [p.column for p in suite.params if p.axis]
    frame = numeric(frame)
    passed = frame[frame["status"] == "pass"] if "status" in frame else frame
    present = [c for c in ("kernel_us_median", "graph_us_median") if c in passed]
    timed = passed.dropna(subset=present, how="all") if present else passed.iloc[0:0]
    figures = [(line_figure, timed, spec) for spec in suite.plot_specs()]
    figures += [(heatmap_figure, passed, spec) for spec in suite.heatmap_specs()]
    written = []
    for figure, rows, spec in figures:
        needed = {spec.get(k) for k in ("value", "index", "columns")} - {None}
        ys = spec["y"] if isinstance(spec.get("y"), list) else [spec["y"]] if "y" in spec else []
        xs = spec["x"] if isinstance(spec.get("x"), list) else [spec["x"]] if "x" in spec else []
        if not needed <= set(rows.columns) or (ys and not any(y in rows for y in ys)) or (xs and not any(x in rows for x in xs)):
            continue  # a run written by an older version lacks the columns
        path = Path(run_dir) / spec["file"]
        if figure(rows, spec, path, axes):
            written.append(path)
        else:
            path.unlink(missing_ok=True)  # an older picture of data this run does not have would mislead
    return written


def heatmap_figure(frame: pd.DataFrame, spec: dict, path: Path, axes: list[str]) -> bool:
    """A value over two case axes, numbers printed in the cells; one panel per combination of the other axes that
    vary (never a median over cases). A ratio (spec["ratio"]) gets a log colour scale centred at 1x."""
    data = frame
    for column, value in spec.get("where", {}).items():
        data = data[data[column].astype(str) == str(value)]
    data = data.dropna(subset=[spec["value"]])
    if data.empty or data[spec["index"]].nunique() * data[spec["columns"]].nunique() < 2:
        return False
    others = [c for c in ["backend", *varying(data, axes)] if c not in (spec["index"], spec["columns"])]
    others = [c for c in others if data[c].astype(str).nunique() > 1]
    groups = list(data.groupby(others, sort=True)) if others else [((), data)]
    groups = sorted(groups, key=lambda g: tuple(sort_key(v) for v in (g[0] if isinstance(g[0], tuple) else (g[0],))))
    groups = groups[:MAX_PANELS]
    n_cols = data[spec["columns"]].nunique()
    fig, grid = figure_grid(len(groups), 1.6 + 0.8 * max(3, n_cols), 1.6 + 0.45 * max(3, data[spec["index"]].nunique()))
    values = data[spec["value"]].astype(float)
    if spec.get("ratio"):
        reach = max(float(values.max()), 1.0 / max(float(values.min()), 1e-9), 1.1)
        norm, cmap = LogNorm(vmin=1.0 / reach, vmax=reach), "RdYlGn"
    else:
        center = spec.get("center", float(values.median()))
        spread = max(abs(float(values.max()) - center), abs(center - float(values.min())), 1e-3)
        norm, cmap = matplotlib.colors.Normalize(vmin=center - spread, vmax=center + spread), "RdYlGn"
    for ax, (key, part) in zip(grid, groups):
        table = part.pivot(index=spec["index"], columns=spec["columns"], values=spec["value"]).astype(float)
        table = table.reindex(index=sorted(table.index, key=sort_key), columns=sorted(table.columns, key=sort_key))
        image = ax.imshow(table.values, cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(table.index)), [str(i) for i in table.index], fontsize=8)
        ax.set_xlabel(spec["columns"])
        ax.set_ylabel(spec["index"])
        for (i, j), value in pd.DataFrame(table.values).stack().items():
            ax.text(j, i, spec.get("fmt", "{:.2f}x" if spec.get("ratio") else "{:.2f}").format(value),
                    ha="center", va="center", fontsize=7)
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(" ".join(f"{c}={SHORT.get(str(v), v)}" if c != "backend" else str(v) for c, v in zip(others, key)),
                     fontsize=9)
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        if spec.get("ratio"):
            bar.set_ticks([t for t in RATIO_TICKS if norm.vmin <= t <= norm.vmax])
            bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}x"))
            bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    finish(fig, spec["title"], path)
    return True
