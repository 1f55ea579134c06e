"""Contact sheets: many seeds rendered at one size and tiled into one image, row by row.

Each cell is exactly what render_image gives for that latent (same grid, same chunking rule), so a
cell of the grid equals the single render of its seed, pixel for pixel. The tiling happens on raw
values with WHITE (1.0, which to_uint8 maps to 255) in the gaps, so a grid goes through the same
write_output (and 8-bit conversion) as a single image.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cips_edge.core.errors import UserError
from .image import check_image_size
from .protocol import RenderModel
from .render import Progress, render_image

WHITE = 1.0  # raw generator value of white: (1 + 1) * 127.5 = 255


@dataclass(frozen=True)
class GridLayout:
    """count cells of cell x cell pixels in rows x columns, `padding` white pixels between cells and
    around the edge."""

    count: int
    cell: int
    rows: int
    columns: int
    padding: int

    @property
    def width(self) -> int:
        return self.columns * self.cell + (self.columns + 1) * self.padding

    @property
    def height(self) -> int:
        return self.rows * self.cell + (self.rows + 1) * self.padding

    def origin(self, k: int) -> tuple[int, int]:
        """(top, left) pixel of cell k; cells fill the rows left to right, top to bottom."""
        row, column = divmod(k, self.columns)
        return self.padding + row * (self.cell + self.padding), self.padding + column * (self.cell + self.padding)


def grid_layout(count: int, cell: int, columns: int | None = None, padding: int = 2,
                force: bool = False) -> GridLayout:
    """The layout of `count` cells: columns default to ceil(sqrt(count)) and never exceed count (a
    single row has no empty cells); rows are as many as needed. Bad values are one-line UserErrors."""
    if count < 1:
        raise UserError("seeds: none given (e.g. 0-63 for 64 cells)", params="seeds")
    try:
        check_image_size(cell, cell, force)
    except UserError as e:
        raise UserError(f"cell (the size of a cell): {e}", params=("cell", *e.params)) from None
    if columns is not None and columns < 1:
        raise UserError(f"columns must be at least 1, got {columns}", params="columns")
    if padding < 0:
        raise UserError(f"padding must be 0 or more pixels, got {padding}", params="padding")
    columns = min(columns or math.isqrt(count - 1) + 1, count)  # isqrt(n - 1) + 1 = ceil(sqrt(n)), exact
    layout = GridLayout(count, cell, -(-count // columns), columns, padding)
    try:
        check_image_size(layout.width, layout.height, force)
    except UserError as e:
        raise UserError(f"a grid of {layout.rows} x {layout.columns} cells: {e}", params=e.params) from None
    return layout


def render_grid(model: RenderModel, latents: Sequence[np.ndarray], layout: GridLayout, truncation: float = 1.0,
                chunk: int | None = None, progress: Progress | None = None) -> np.ndarray:
    """Raw RGB of the whole sheet: [layout.height, layout.width, 3] float32, WHITE between cells."""
    assert len(latents) == layout.count, (len(latents), layout.count)
    sheet = np.full((layout.height, layout.width, 3), WHITE, dtype=np.float32)
    for k, z in enumerate(latents):
        top, left = layout.origin(k)
        sheet[top:top + layout.cell, left:left + layout.cell] = render_image(
            model, z, layout.cell, layout.cell, truncation=truncation, chunk=chunk, progress=progress)
    return sheet
