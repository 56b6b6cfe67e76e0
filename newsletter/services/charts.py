"""Small charts drawn on the server as SVG, each with a table of the same numbers.

No JavaScript and no charting library: a chart is an inline `<svg role="img">` with a
`<title>` and a `<desc>`, inside a `<figure>` whose `<details>` holds a `<table>` of
every number drawn, so a screen reader, a text browser and a copy-paste all get the
figures. The SVG is built with ElementTree, so every label (an article's title, a
link) is escaped, and characters XML cannot hold (control characters, lone
surrogates) are dropped; line breaks and tabs in a label become spaces.

Two kinds, for every admin page that needs one:

    line_chart(title=..., dates=[date, ...], series=[Series("Paid", [3, 4, 6]), ...])
    bar_chart(title=..., labels=["Signups", ...], series=[Series("Readers", [12, ...])])

Each series has one value (an int or a float, negative allowed) per date or label.
`value_format` turns a value into the text shown in the table and on the axis (e.g.
money from cents), `date_format` a date into its label. The result is a `Chart`:
`{{ chart }}` in a template renders the figure (it is safe HTML), `chart.svg` and
`chart.table` are the two halves.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

from django.utils.safestring import SafeString, mark_safe

Number = int | float

WIDTH = 640
HEIGHT = 240
_LEFT = 64  # room for the value axis's labels
_RIGHT = 16
_TOP = 16
_BOTTOM = 40  # room for the date or label axis
# Colours that stay apart for colour-blind readers (Okabe and Ito), each series also
# named in the legend and the table.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")

# Not allowed in XML 1.0 (https://www.w3.org/TR/xml/#charsets): C0 controls but tab,
# line feed and carriage return, lone surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_BREAKS = re.compile("[\t\n\r]")
_ids = itertools.count(1)


# Bar charts of up to this many bars name every bar; longer ones (and line charts) name
# the first and the last, at about this many units of the view box per character.
_LABELLED_BARS = 8
_LABEL_CHARACTER_WIDTH = 7


def plain_label(text: object) -> str:
    """A label as the chart shows it: one line, only characters XML can carry."""
    return _BREAKS.sub(" ", _NOT_XML.sub("", str(text)))


def default_value_format(value: Number) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def default_date_format(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[Number]


@dataclass(frozen=True)
class Chart:
    title: str
    svg: SafeString
    table: SafeString

    def __html__(self) -> SafeString:
        return mark_safe(  # noqa: S308 - both halves are built escaped
            f'<figure class="chart">{self.svg}'
            f"<details><summary>The numbers: {escape(plain_label(self.title))}</summary>"
            f"{self.table}</details></figure>"
        )

    def __str__(self) -> SafeString:
        # Django's templates make a value a str before escaping it: a safe one stays as is.
        return self.__html__()


def line_chart(
    *,
    title: str,
    dates: Sequence[date],
    series: Sequence[Series],
    value_format: Callable[[Number], str] = default_value_format,
    date_format: Callable[[date], str] = default_date_format,
) -> Chart:
    """Values over consecutive dates, one line per series."""
    labels = [date_format(day) for day in dates]
    return _chart(title=title, labels=labels, series=series, value_format=value_format, kind="line")


def bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    value_format: Callable[[Number], str] = default_value_format,
) -> Chart:
    """One group of bars per label, one bar per series."""
    return _chart(
        title=title,
        labels=list(labels),
        series=series,
        value_format=value_format,
        kind="bar",
    )


# --- Drawing ---------------------------------------------------------------------------


def _checked(series: Sequence[Series], count: int) -> list[list[float]]:
    rows = []
    for one in series:
        if len(one.values) != count:
            raise ValueError(
                f"Series {one.name!r} has {len(one.values)} values for {count} points."
            )
        try:
            values = [float(value) for value in one.values]
        except OverflowError:
            raise ValueError(f"Series {one.name!r} has a value too large to draw.") from None
        if not all(math.isfinite(value) for value in values):
            raise ValueError(f"Series {one.name!r} has a value that is not a finite number.")
        rows.append(values)
    return rows


def _scale(rows: list[list[float]]) -> tuple[float, float]:
    """The value range drawn: from zero (or the lowest value) to the highest."""
    values = [value for row in rows for value in row]
    low = min([0.0, *values])
    high = max([0.0, *values])
    if high == low:
        high = low + 1.0
    return low, high


def _number(value: float) -> str:
    return f"{value:.1f}"


def _chart(
    *,
    title: str,
    labels: list[str],
    series: Sequence[Series],
    value_format: Callable[[Number], str],
    kind: str,
) -> Chart:
    rows = _checked(series, len(labels))
    low, high = _scale(rows)
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM

    def y(value: float) -> float:
        # Halved first, so that the differences of finite floats stay finite.
        return _TOP + plot_height * (1 - (value / 2 - low / 2) / (high / 2 - low / 2))

    number = next(_ids)
    title_id, desc_id = f"chart-{number}-title", f"chart-{number}-desc"
    svg = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "width": "100%",
            "role": "img",
            "aria-labelledby": f"{title_id} {desc_id}",
            "class": f"chart__svg chart__svg--{kind}",
        },
    )
    ET.SubElement(svg, "title", {"id": title_id}).text = plain_label(title)
    ET.SubElement(svg, "desc", {"id": desc_id}).text = _description(
        labels=labels, series=series, rows=rows, value_format=value_format
    )
    axes = ET.SubElement(svg, "g", {"class": "chart__axes", "aria-hidden": "true"})
    baseline = y(0.0)
    ET.SubElement(
        axes,
        "line",
        {
            "x1": str(_LEFT),
            "x2": str(WIDTH - _RIGHT),
            "y1": _number(baseline),
            "y2": _number(baseline),
            "stroke": "#767676",
        },
    )
    for value in (low, high) if low < 0 else (high,):
        _text(axes, _LEFT - 6, y(value) + 4, value_format(_as_given(value)), anchor="end")
    _text(axes, _LEFT - 6, baseline + 4, value_format(0), anchor="end")
    if not labels:
        _text(axes, WIDTH / 2, HEIGHT / 2, "No data yet", anchor="middle")
    elif kind == "bar" and len(labels) <= _LABELLED_BARS:
        # Few bars: each is named under its middle, shortened to fit its slot (the
        # table holds every label whole).
        slot = plot_width / len(labels)
        fits = max(3, int(slot / _LABEL_CHARACTER_WIDTH))
        for position, label in enumerate(labels):
            text = plain_label(label)
            if len(text) > fits:
                text = text[: fits - 1] + "…"
            _text(axes, _LEFT + slot * (position + 0.5), HEIGHT - 12, text, anchor="middle")
    else:
        _text(axes, _LEFT, HEIGHT - 12, plain_label(labels[0]), anchor="start")
        if len(labels) > 1:
            _text(axes, WIDTH - _RIGHT, HEIGHT - 12, plain_label(labels[-1]), anchor="end")
    plot = ET.SubElement(svg, "g", {"class": "chart__plot"})
    count = len(labels)
    for index, (one, values) in enumerate(zip(series, rows, strict=True)):
        colour = PALETTE[index % len(PALETTE)]
        group = ET.SubElement(plot, "g", {"class": "chart__series", "fill": colour})
        ET.SubElement(group, "title").text = plain_label(one.name)
        if kind == "line":
            _draw_line(group, values, colour, y, plot_width, count)
        else:
            _draw_bars(group, values, y, plot_width, count, index, len(series), baseline)
    if len(series) > 1:
        _legend(svg, series)
    return Chart(
        title=title,
        svg=mark_safe(ET.tostring(svg, encoding="unicode")),  # noqa: S308 - built by ElementTree
        table=_table(title=title, labels=labels, series=series, value_format=value_format),
    )


def _as_given(value: float) -> Number:
    return int(value) if value.is_integer() and abs(value) < 2**63 else value


def _draw_line(group, values, colour, y, plot_width, count) -> None:
    def x(position: int) -> float:
        return _LEFT + (plot_width / 2 if count == 1 else plot_width * position / (count - 1))

    if count > 1:
        points = " ".join(f"{_number(x(n))},{_number(y(v))}" for n, v in enumerate(values))
        ET.SubElement(
            group,
            "polyline",
            {"points": points, "fill": "none", "stroke": colour, "stroke-width": "2"},
        )
    if count <= 31:  # few enough points to mark each
        for position, value in enumerate(values):
            ET.SubElement(
                group,
                "circle",
                {"cx": _number(x(position)), "cy": _number(y(value)), "r": "3"},
            )


def _draw_bars(group, values, y, plot_width, count, index, series_count, baseline) -> None:
    if not count:
        return
    slot = plot_width / count
    width = slot * 0.8 / series_count
    for position, value in enumerate(values):
        left = _LEFT + slot * position + slot * 0.1 + width * index
        top = min(y(value), baseline)
        ET.SubElement(
            group,
            "rect",
            {
                "x": _number(left),
                "y": _number(top),
                "width": _number(width),
                "height": _number(abs(baseline - y(value))),
            },
        )


def _legend(svg: ET.Element, series: Sequence[Series]) -> None:
    legend = ET.SubElement(svg, "g", {"class": "chart__legend", "aria-hidden": "true"})
    for index, one in enumerate(series):
        top = _TOP + 14 * index
        ET.SubElement(
            legend,
            "rect",
            {
                "x": str(_LEFT + 8),
                "y": str(top),
                "width": "10",
                "height": "10",
                "fill": PALETTE[index % len(PALETTE)],
            },
        )
        _text(legend, _LEFT + 22, top + 9, plain_label(one.name), anchor="start")


def _text(parent: ET.Element, x: float, y: float, text: str, *, anchor: str) -> None:
    ET.SubElement(
        parent,
        "text",
        {"x": _number(x), "y": _number(y), "text-anchor": anchor, "font-size": "11"},
    ).text = text


def _description(*, labels, series, rows, value_format) -> str:
    if not labels:
        return "No data yet."
    parts = []
    for one, values in zip(series, rows, strict=True):
        last = value_format(_as_given(values[-1]))
        parts.append(f"{plain_label(one.name)}: {last} at {plain_label(labels[-1])}")
    return "; ".join(parts) + ". Every value is in the table below."


def _table(*, title, labels, series, value_format) -> SafeString:
    head = "".join(f'<th scope="col">{escape(plain_label(one.name))}</th>' for one in series)
    body = "".join(
        f'<tr><th scope="row">{escape(plain_label(label))}</th>'
        + "".join(f"<td>{escape(value_format(one.values[n]))}</td>" for one in series)
        + "</tr>"
        for n, label in enumerate(labels)
    )
    return mark_safe(  # noqa: S308 - every piece of text is escaped above
        f'<table class="chart__table"><caption>{escape(plain_label(title))}</caption>'
        f"<thead><tr><td></td>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
