"""One element of a page, found with Python's own HTML parser, so that an assertion about
the paywall box or the comment form looks only there and not at the header and footer
every page has."""

from __future__ import annotations

from html.parser import HTMLParser

# Elements without an end tag: they open no nesting level.
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class _ElementFinder(HTMLParser):
    def __init__(self, *, id: str | None, css_class: str | None) -> None:
        super().__init__(convert_charrefs=False)
        self.id, self.css_class = id, css_class
        self.depth = 0
        self.found: list[str] = []
        self.current: list[str] = []

    def _matches(self, attrs: list[tuple[str, str | None]]) -> bool:
        values = dict(attrs)
        if self.id is not None:
            return values.get("id") == self.id
        return self.css_class in (values.get("class") or "").split()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.current.append(self.get_starttag_text() or "")
            if tag not in _VOID:
                self.depth += 1
        elif self._matches(attrs) and tag not in _VOID:
            self.depth = 1
            self.current = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.current.append(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        self.depth -= 1
        if self.depth:
            self.current.append(f"</{tag}>")
        else:
            self.found.append("".join(self.current))

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.current.append(data)

    def handle_entityref(self, name: str) -> None:
        self.handle_data(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.handle_data(f"&#{name};")


def elements(
    html: str | bytes, *, id: str | None = None, css_class: str | None = None
) -> list[str]:
    """The inner markup of every element with this id, or with this class among its classes."""
    if (id is None) == (css_class is None):
        raise ValueError("Give an id or a class.")
    finder = _ElementFinder(id=id, css_class=css_class)
    finder.feed(html.decode() if isinstance(html, bytes) else html)
    finder.close()
    return finder.found


def element(html: str | bytes, *, id: str | None = None, css_class: str | None = None) -> str:
    """The inner markup of the one element with this id or class; fails unless exactly one."""
    found = elements(html, id=id, css_class=css_class)
    assert len(found) == 1, f"expected one element {id or css_class!r}, found {len(found)}"
    return found[0]
