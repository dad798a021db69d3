"""Markdown -> HTML for every page the package writes (report.html, compare.html, table.html): one converter,
markdown-it-py's CommonMark with GitHub-style tables."""

from __future__ import annotations

from markdown_it import MarkdownIt

# Raw HTML off: split names, domains and notes come from the recipe and are shown as text, never as markup.
_MD = MarkdownIt("commonmark", {"html": False}).enable("table")


def to_html(text: str) -> str:
    """The HTML of a Markdown document (tables, lists, `code`, **bold**); every character of text escaped."""
    return _MD.render(text)
