"""How numbers read in every report, card and command output: one place, so they agree."""

from __future__ import annotations


def pct(x: float | None) -> str:
    """A fraction as percent with one decimal (0.835 -> "83.5"); "–" when missing."""
    return "–" if x is None else f"{100 * x:.1f}"


def pct_interval(value: float | None, ci: list[float] | tuple[float, float] | None) -> str:
    """"83.5 [79.8, 87.0]": a fraction and its interval, in percent; the value alone without an interval."""
    return pct(value) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")


def signed_points(diff: float, ci: list[float] | tuple[float, float] | None = None) -> str:
    """A difference of fractions in percentage points with its sign: "+1.2 [-0.4, +2.9]"."""
    return f"{100 * diff:+.1f}" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")
