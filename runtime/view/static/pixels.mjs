// Where a tile's pixels lie and how raw model values become 8-bit: the JavaScript twin of tiles.py's
// tile scheme, coords.py's pixel grid and image.py's to_uint8. JavaScript numbers are float64, and each
// value here is computed with the Python side's operations in its order, so the coordinates the model
// gets are bit for bit those of `cips render --region` (tests/test_web.py checks).

/** The rectangle [x0, y0, x1, y1] of the plane that tile (x, y) of zoom z covers (tiles.tile_edges). */
export function tileEdges(z, x, y) {
  const s = 2.0 / 2.0 ** z;
  return [-1.0 + x * s, -1.0 + y * s, -1.0 + (x + 1) * s, -1.0 + (y + 1) * s];
}

/** The --region whose height x width pixels are the centres of equal cells over edges (tiles.cell_centres). */
export function cellCentres([x0, y0, x1, y1], height, width) {
  const hx = (x1 - x0) / (2 * width), hy = (y1 - y0) / (2 * height);
  return [x0 + hx, y0 + hy, x1 - hx, y1 - hy];
}

/** The --region of a size x size tile (tiles.tile_region). */
export function tileRegion(z, x, y, size) {
  return cellCentres(tileEdges(z, x, y), size, size);
}

/** numpy.linspace(start, stop, num) in float64, then float32: start + j * step, the last one stop. */
export function linspace32(start, stop, num) {
  const out = new Float32Array(num), step = (stop - start) / (num - 1);
  if (num === 1) return Float32Array.of(start);  // numpy: 0 * delta + start, where step would be NaN
  for (let j = 0; j < num; j++) out[j] = j * step + start;  // a Float32Array store rounds like astype
  if (num > 1) out[num - 1] = stop;
  return out;
}

/** The points [count, 2] (x' first) of pixels first .. first + count - 1 of a row-major grid over
 * xs (columns) and ys (rows), as grid_chunks gives them. */
export function gridPoints(xs, ys, first, count) {
  const out = new Float32Array(2 * count), width = xs.length;
  for (let k = 0; k < count; k++) {
    const p = first + k;
    out[2 * k] = xs[p % width];
    out[2 * k + 1] = ys[Math.floor(p / width)];
  }
  return out;
}

/** Raw RGB [n, 3] -> opaque RGBA bytes at pixel `offset` of `out` (a Uint8ClampedArray). The store
 * into a Uint8ClampedArray clips to [0, 255] and rounds half to even, so this is exactly to_uint8's
 * clip(rint((v + 1) * 127.5), 0, 255) in float64. */
export function toRGBA(rgb, out, offset) {
  const n = rgb.length / 3;
  for (let k = 0; k < n; k++) {
    const o = 4 * (offset + k);
    out[o] = (rgb[3 * k] + 1) * 127.5;
    out[o + 1] = (rgb[3 * k + 1] + 1) * 127.5;
    out[o + 2] = (rgb[3 * k + 2] + 1) * 127.5;
    out[o + 3] = 255;
  }
}
