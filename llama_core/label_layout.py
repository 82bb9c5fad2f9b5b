"""Text labels for the points of a crowded chart that never overlap: each label takes the first side of
its point (above, below, right, left) where it touches no label placed before it, no marker and no edge
of the plot; a label with no such side is left to the hover. Points are placed in priority order."""

from __future__ import annotations

import math
from dataclasses import dataclass

SIDES = ("top center", "bottom center", "middle right", "middle left")
GAP_PX, MARKER_PX = 7.0, 7.0  # a label's distance from its point; half a 12 px marker


@dataclass(frozen=True)
class PlotArea:
    """Where data lands in pixels: the axis ranges (log10 for log axes, as Plotly takes them) and the size."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width_px: float
    height_px: float

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return (x - x0) / (x1 - x0) * self.width_px, (y - y0) / (y1 - y0) * self.height_px


def _box(px: float, py: float, side: str, text: str, font_px: float = 12) -> tuple[float, float, float, float]:
    w, h = 0.58 * font_px * len(text), 1.35 * font_px  # an average character of a sans-serif font, and a line
    if side == "top center":
        return px - w / 2, py + GAP_PX, px + w / 2, py + GAP_PX + h
    if side == "bottom center":
        return px - w / 2, py - GAP_PX - h, px + w / 2, py - GAP_PX
    if side == "middle right":
        return px + GAP_PX, py - h / 2, px + GAP_PX + w, py + h / 2
    return px - GAP_PX - w, py - h / 2, px - GAP_PX, py + h / 2


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(points: list[tuple[str, float, float]], area: PlotArea, log_x: bool = True, log_y: bool = True,
                 font_px: float = 12) -> list[str | None]:
    """A text position for each (name, x, y) in data units, or None where the label would collide."""
    pixels = [area.pixel(math.log10(x) if log_x else x, math.log10(y) if log_y else y) for _, x, y in points]
    taken = [(px - MARKER_PX, py - MARKER_PX, px + MARKER_PX, py + MARKER_PX) for px, py in pixels]
    sides: list[str | None] = []
    for (name, _, _), (px, py) in zip(points, pixels):
        chosen = None
        for side in SIDES:
            box = _box(px, py, side, name, font_px)
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= area.width_px and box[3] <= area.height_px
            own = (px - MARKER_PX, py - MARKER_PX, px + MARKER_PX, py + MARKER_PX)
            if inside and not any(_overlaps(box, other) for other in taken if other != own):
                chosen = side
                taken.append(box)
                break
        sides.append(chosen)
    return sides
