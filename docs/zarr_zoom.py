"""docs/images/zarr-zoom.png: a zoom into a rendered OME-Zarr pyramid, one panel per level, each a
256 x 256 window read from the pyramid (no resampling), the next panel's window outlined in red.

    cips render --seed 33 --size 8192 --out seed33.zarr
    python docs/zarr_zoom.py seed33.zarr docs/images/zarr-zoom.png --at -0.21 -0.11
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from cips_edge.runtime.pyramid import Pyramid

PANEL, GAP, LABEL = 256, 8, 18


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pyramid")
    p.add_argument("out")
    p.add_argument("--at", nargs=2, type=float, default=(-0.205, -0.115), metavar=("X", "Y"),
                   help="the point zoomed into, in the frame units of the pyramid's region")
    p.add_argument("--levels", default=None, help="levels shown, coarsest first (default: the last, then every "
                                                  "second one down to 0)")
    args = p.parse_args()
    pyr = Pyramid(args.pyramid)
    x0, y0, x1, y1 = pyr.params["region"]
    top = len(pyr.levels) - 1
    shown = [int(v) for v in args.levels.split(",")] if args.levels else sorted({top, *range(top - 2, 0, -2), 0},
                                                                                reverse=True)
    u = (args.at[0] - x0) / (x1 - x0)  # where the point is, as a fraction of the image
    v = (args.at[1] - y0) / (y1 - y0)
    windows = []
    for k in shown:
        lv = pyr.levels[k]
        w, h = min(PANEL, lv.width), min(PANEL, lv.height)
        left = int(np.clip(round(u * lv.width - w / 2), 0, lv.width - w))
        top_ = int(np.clip(round(v * lv.height - h / 2), 0, lv.height - h))
        windows.append((k, left, top_, w, h))
    sheet = Image.new("RGB", (len(windows) * (PANEL + GAP) - GAP, PANEL + LABEL), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (k, left, top_, w, h) in enumerate(windows):
        at = i * (PANEL + GAP)
        sheet.paste(Image.fromarray(pyr.read(k, top_, left, h, w)), (at, 0))
        if i + 1 < len(windows):  # the next window, in this level's pixels
            k2, left2, top2, w2, h2 = windows[i + 1]
            f = 2 ** (k - k2)
            box = [at + left2 / f - left, top2 / f - top_, at + (left2 + w2) / f - left - 1, (top2 + h2) / f - top_ - 1]
            draw.rectangle(box, outline=(220, 0, 0), width=2)
        zoom = 2 ** (shown[0] - k)
        draw.text((at + 4, PANEL + 3), f"level {k}: {pyr.levels[k].width} px wide, x{zoom}", fill="black")
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}: levels {', '.join(map(str, shown))}")


if __name__ == "__main__":
    main()
