"""Server-drawn charts: well-formed SVG whatever the labels and numbers, accessible, and
with a table of exactly the numbers drawn."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

import html5lib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.services.charts import Series, bar_chart, line_chart, plain_label

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"

# Any unicode: control characters and lone surrogates too, which XML cannot hold.
labels = st.text(st.characters(exclude_categories=()), max_size=60)
numbers = st.one_of(
    st.integers(min_value=-(10**18), max_value=10**18),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
)


def parsed_svg(chart) -> ET.Element:
    """The SVG through a real XML parser: fails on anything not well-formed."""
    return ET.fromstring(str(chart.svg))  # noqa: S314 - our own output, under test


def table_cells(chart) -> tuple[str, list[str], list[list[str]]]:
    """The figure as a browser parses it (html5lib): caption, header, rows of cells."""
    tree = html5lib.parse(str(chart))
    [table] = list(tree.iter(f"{XHTML}table"))
    caption = "".join(next(table.iter(f"{XHTML}caption")).itertext())
    [head] = list(table.iter(f"{XHTML}thead"))
    header = ["".join(th.itertext()) for th in head.iter(f"{XHTML}th")]
    [body] = list(table.iter(f"{XHTML}tbody"))
    rows = [["".join(cell.itertext()) for cell in row] for row in body.iter(f"{XHTML}tr")]
    return caption, header, rows


def texts(element: ET.Element) -> list[str]:
    return [node.text or "" for node in element.iter() if node.tag in (f"{SVG}text", f"{SVG}title")]


@settings(max_examples=150, deadline=None)
@given(
    title=labels,
    names=st.lists(labels, min_size=1, max_size=3),
    label_list=st.lists(labels, max_size=8),
    data=st.data(),
)
def test_any_labels_and_numbers_make_a_well_formed_bar_chart_whose_text_round_trips(
    title, names, label_list, data
):
    series = [
        Series(
            name, data.draw(st.lists(numbers, min_size=len(label_list), max_size=len(label_list)))
        )
        for name in names
    ]

    chart = bar_chart(title=title, labels=label_list, series=series)

    svg = parsed_svg(chart)
    assert svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == plain_label(title) or (
        plain_label(title) == "" and svg.find(f"{SVG}title").text is None
    )
    drawn = texts(svg)
    for name in names:
        assert plain_label(name) in drawn or plain_label(name) == ""
    caption, header, rows = table_cells(chart)
    assert caption == plain_label(title)
    assert header == [plain_label(name) for name in names]
    assert [row[0] for row in rows] == [plain_label(label) for label in label_list]
    for row, position in zip(rows, range(len(label_list)), strict=True):
        assert row[1:] == [f"{_shown(one.values[position])}" for one in series]


def _shown(value) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


@settings(max_examples=100, deadline=None)
@given(
    title=labels,
    values=st.lists(numbers, max_size=40),
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
)
def test_a_line_chart_over_zero_one_or_many_dates_is_well_formed_with_a_row_per_date(
    title, values, start
):
    dates = [start + timedelta(days=n) for n in range(len(values))]

    chart = line_chart(title=title, dates=dates, series=[Series("Readers", values)])

    svg = parsed_svg(chart)
    circles = list(svg.iter(f"{SVG}circle"))
    lines = list(svg.iter(f"{SVG}polyline"))
    if len(values) <= 31:
        assert len(circles) == len(values)
    assert len(lines) == (1 if len(values) > 1 else 0)
    for element in circles + lines:
        for name in ("cx", "cy", "points"):
            if element.get(name):
                for number in element.get(name).replace(",", " ").split():
                    assert float(number) == float(number)  # no nan
                    assert -1 <= float(number) <= 700
    _caption, _header, rows = table_cells(chart)
    assert [row[1] for row in rows] == [_shown(value) for value in values]
    if not values:
        assert "No data yet" in texts(svg)


def test_labels_are_escaped_not_markup():
    chart = bar_chart(
        title='<script>alert("x")</script> & co',
        labels=["<b>bold</b>", "a\x00b\x1fc\nd"],
        series=[Series("</svg><img src=x onerror=alert(1)>", [1, 2])],
    )

    page = str(chart)
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    svg = parsed_svg(chart)
    assert svg.find(f"{SVG}title").text == '<script>alert("x")</script> & co'
    _caption, header, rows = table_cells(chart)
    assert header == ["</svg><img src=x onerror=alert(1)>"]
    assert [row[0] for row in rows] == ["<b>bold</b>", "abc d"]


def test_the_chart_names_its_title_and_description_for_assistive_technology():
    chart = line_chart(
        title="Subscribers",
        dates=[date(2026, 3, 1), date(2026, 3, 2)],
        series=[Series("Free", [3, 5]), Series("Paid", [1, 2])],
    )

    svg = parsed_svg(chart)
    title_id, desc_id = svg.get("aria-labelledby").split()
    assert svg.find(f"{SVG}title").get("id") == title_id
    description = svg.find(f"{SVG}desc")
    assert description.get("id") == desc_id
    assert (
        description.text
        == "Free: 5 at 2 Mar 2026; Paid: 2 at 2 Mar 2026. Every value is in the table below."
    )
    _caption, header, rows = table_cells(chart)
    assert header == ["Free", "Paid"]
    assert rows == [["1 Mar 2026", "3", "1"], ["2 Mar 2026", "5", "2"]]


def test_higher_values_are_drawn_higher():
    chart = line_chart(
        title="MRR",
        dates=[date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)],
        series=[Series("MRR", [0, 10, 5])],
    )

    heights = [float(c.get("cy")) for c in parsed_svg(chart).iter(f"{SVG}circle")]
    # SVG's y grows downwards.
    assert heights[1] < heights[2] < heights[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 10**400])
def test_a_value_that_cannot_be_drawn_is_refused_with_its_series_name(bad):
    with pytest.raises(ValueError, match="Readers"):
        bar_chart(title="t", labels=["a"], series=[Series("Readers", [bad])])


def test_a_series_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="2 values for 3 points"):
        bar_chart(title="t", labels=["a", "b", "c"], series=[Series("Readers", [1, 2])])


def axis_labels(chart) -> list[str]:
    [axes] = [g for g in parsed_svg(chart).iter(f"{SVG}g") if g.get("class") == "chart__axes"]
    return [text.text or "" for text in axes.iter(f"{SVG}text")]


def test_a_bar_chart_of_a_few_bars_names_every_bar_and_a_long_one_only_its_ends():
    few = bar_chart(
        title="Converted",
        labels=["Signed up", "Upgraded to paid", "Donated"],
        series=[Series("Readers", [3, 1, 1])],
    )
    many = bar_chart(
        title="Days",
        labels=[f"day {n}" for n in range(20)],
        series=[Series("Readers", list(range(20)))],
    )

    assert {"Signed up", "Upgraded to paid", "Donated"} <= set(axis_labels(few))
    assert {"day 0", "day 19"} <= set(axis_labels(many))
    assert "day 7" not in axis_labels(many)


def test_a_bar_label_longer_than_its_slot_is_shortened_under_its_bar():
    long = "A very long label that cannot fit under one of eight bars at all"
    chart = bar_chart(title="Links", labels=[long] * 8, series=[Series("Readers", [1] * 8)])

    shortened = [label for label in axis_labels(chart) if label.endswith("…")]
    assert len(shortened) == 8
    assert all(long.startswith(label[:-1]) for label in shortened)
