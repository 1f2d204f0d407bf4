"""Matplotlib figures drawn with the Agg renderer through `matplotlib.figure.Figure`, never pyplot, so plots work
headless and leave the caller's matplotlib backend and figure state alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def figure(width: float, height: float) -> "Figure":
    """A matplotlib Figure of width x height inches at 100 dpi, laid out tightly."""
    from matplotlib.figure import Figure  # renders with Agg on savefig; no pyplot, no global backend switch

    return Figure(figsize=(width, height), dpi=100, layout="constrained")

