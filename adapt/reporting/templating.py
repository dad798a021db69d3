"""The Jinja2 environment of the packaged templates (`adapt/reporting/templates/`).

Python prepares a plain context (numbers already formatted by `adapt.core.formatting`); templates do the layout
with loops and ifs. Undefined names are errors, and only `.html.j2` templates escape what they insert.
"""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from adapt.reporting.markdown import to_html


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("adapt.reporting", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # `{{ text | markdown }}` or `{% filter markdown %}...{% endfilter %}`: Markdown shown as HTML. Safe to mark as
    # markup: the converter escapes all text (raw HTML is off).
    env.filters["markdown"] = lambda text: Markup(to_html(str(text)))
    return env


def render_template(template: str, /, **context: object) -> str:
    return environment().get_template(template).render(**context)
