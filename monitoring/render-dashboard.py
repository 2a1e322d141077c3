#!/usr/bin/python3
"""Renders a dashboard's panels, as monitoring/live-test.py --data exported them from a real
Prometheus, into a PNG laid out like Grafana lays the dashboard out (its gridPos), so a reader
sees what the dashboard shows without a Grafana:

    /usr/bin/python3 monitoring/render-dashboard.py DATA.json OUT.png

Needs matplotlib (Debian: python3-matplotlib, which hack/install-tools.sh installs). Time-series
panels are lines over the run's seconds, stat panels their last value, tables their rows.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
GRID = "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#fade2a"]
UNIT_ROW = 0.42  # inches per grid unit of height


def human(value, unit):
    if value != value:  # NaN
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "percent":
        return f"{value:.0f}%"
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.0f} ms"
        return f"{value:.1f} s"
    if unit in ("bytes", "Bps"):
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if abs(value) < 1024:
                return f"{value:.0f} {suffix}" + ("/s" if unit == "Bps" else "")
            value /= 1024
        return f"{value:.1f} TiB"
    if unit in ("reqps", "ops", "wps", "cps"):
        return f"{value:.1f}/s"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"


def main(data_path, out_path):
    data = json.load(open(data_path))
    panels = data["panels"]
    height_units = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width_in = 18.0
    height_in = height_units * UNIT_ROW + 0.7
    fig = plt.figure(figsize=(width_in, height_in), dpi=100, facecolor=BACKGROUND)
    header = 0.7 / height_in
    fig.text(0.01, 1 - header * 0.55, f"{data['title']}   namespace={data['binding']['namespace']}  app={data['binding']['app']}"
             f"   (last {data['seconds']:.0f} s of monitoring/live-test.py, real Prometheus data)",
             color=TEXT, fontsize=12, va="center")
    usable = 1 - header
    pad_x, pad_y = 0.004, 0.008

    def box(pos, ticks=False):
        # Time series leave room inside their cell for the tick labels.
        left_pad = 0.035 if ticks else 0.0
        bottom_pad = 0.012 if ticks else 0.0
        left = pos["x"] / 24 + pad_x + left_pad
        width = pos["w"] / 24 - 2 * pad_x - left_pad
        top = 1 - header - pos["y"] / height_units * usable
        height = pos["h"] / height_units * usable
        return [left, top - height + pad_y + bottom_pad, width, height - 2 * pad_y - bottom_pad - 0.012]

    for panel in panels:
        pos = panel["gridPos"]
        if panel["type"] == "row":
            left, bottom, width, height = box(pos)
            fig.text(left, bottom + height / 2, panel["title"], color=TEXT, fontsize=11, weight="bold", va="center")
            continue
        ax = fig.add_axes(box(pos, ticks=panel["type"] == "timeseries"))
        ax.set_facecolor(PANEL)
        for spine in ax.spines.values():
            spine.set_color(GRID)
        ax.set_title(panel["title"], color=TEXT, fontsize=9, loc="left", pad=4)
        unit = panel.get("unit")
        series = panel["series"]
        if panel["type"] == "timeseries":
            for i, s in enumerate(series):
                xs = [p[0] for p in s["points"]]
                ys = [p[1] for p in s["points"]]
                ax.plot(xs, ys, color=COLORS[i % len(COLORS)], linewidth=1.3, label=s["legend"][:40])
            ax.tick_params(colors=TEXT, labelsize=7)
            ax.grid(color=GRID, linewidth=0.5)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, unit=unit: human(v, unit)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}s"))
            if not series:
                ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes, fontsize=9)
            else:
                legend = ax.legend(fontsize=6.5, loc="upper left", frameon=False, ncol=min(3, len(series)))
                for text in legend.get_texts():
                    text.set_color(TEXT)
            ax.set_ylim(bottom=0)
            if panel.get("decimals") == 0:
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        elif panel["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            if series:
                parts = [human(s["value"], unit) for s in series]
                value = " / ".join(parts)
                label = " / ".join(s["legend"] for s in series)
            else:
                value, label = "No data", ""
            ax.text(0.5, 0.55, value, color=COLORS[0], ha="center", va="center", fontsize=22, weight="bold",
                    transform=ax.transAxes)
            ax.text(0.5, 0.18, label, color=TEXT, ha="center", va="center", fontsize=8, transform=ax.transAxes)
        elif panel["type"] == "table":
            ax.set_xticks([])
            ax.set_yticks([])
            keys = []
            for s in series:
                for k in s["metric"]:
                    if k not in keys and k != "__name__":
                        keys.append(k)
            rows = [[s["metric"].get(k, "") for k in keys] for s in series]
            if rows:
                table = ax.table(cellText=rows, colLabels=keys, loc="upper center", cellLoc="left", colLoc="left",
                                 bbox=[0.02, 0.02, 0.96, 0.9])
                table.auto_set_font_size(False)
                table.set_fontsize(8)
                for cell in table.get_celld().values():
                    cell.set_facecolor(PANEL)
                    cell.set_edgecolor(GRID)
                    cell.get_text().set_color(TEXT)
            else:
                ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
    fig.savefig(out_path, facecolor=BACKGROUND)
    print(f"wrote {out_path} ({len([p for p in panels if p['type'] != 'row'])} panels)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
