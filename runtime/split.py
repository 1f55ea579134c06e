"""The fast paths of version-2 and -3 files: the style model runs once per latent, the pixel graph per
chunk of points.

On the CPU the weights a style run returns are numpy arrays, fed to every pixel call. On CUDA they stay
on the GPU (I/O binding): a band of points is copied up once, every chunk of it binds slices of the band
and of one output buffer, the chunks are queued without waiting, and only the band's end waits and
copies the colours back. GPU memory is then the weights, the band and one chunk's activations, whatever
the image size.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from cips_edge.core.format import COORDS, EMBEDDING, GRID_INPUTS, RGB, RGB8, STYLE_INPUTS, ModelInfo

BAND_POINTS = 1 << 22  # points per upload / download on CUDA: 4M points = 80 MB of coords and colours
CUDA_CHUNK_BUDGET = 2 << 30  # bytes of one chunk's activations on CUDA (estimate), for the automatic chunk
MIN_CUDA_CHUNK, MAX_CUDA_CHUNK = 1 << 14, 1 << 20
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8}


@dataclass
class DeviceStyle:
    """One latent's weights on the GPU: (name, OrtValue of the whole batch, byte offset, shape, dtype)."""

    slices: list[tuple[str, object, int, list[int], type]]


def texel_rows(table: np.ndarray) -> np.ndarray:
    """A version-2 style graph's coordinate table [1, H, rows, columns] as its pixel graph reads it:
    one row of H values per texel, [rows * columns, H]; older version-2 pixel graphs take the table as
    it is (GridSample)."""
    return np.ascontiguousarray(table[0].reshape(table.shape[1], -1).T)


def chunk_bytes_per_point(info: ModelInfo, precision: str) -> int:
    """A rough upper estimate of the pixel graph's live activation bytes per point."""
    c = info.config
    features = 4 * (2 * (c.hidden_size + 8) + c.hidden_size) * 2  # Fourier block, sin, embedding (float32)
    widest = max(c.synthesis_widths) + 8
    per_value = {"fp16": 2, "fp32": 4, "int8": 4}[precision]
    return features + 3 * widest * per_value + 64


def grid_bytes_per_point(info: ModelInfo) -> int:
    """The same for the fp16 grid graph: three float16 copies of the Fourier block, the input layer's
    interpolated table half, the chain, the colours. The graph's own peak is lower (float32 angle and
    sine side by side, 8 bytes per Fourier feature: 4,160 B a point for paper-256 against 6,304 here;
    benchmarks/grid_memory.py computes it), but ONNX Runtime's CUDA arena holds more than the graph's
    peak (docs/speed.md)."""
    c = info.config
    widest = max(c.synthesis_widths) + 8
    return 2 * 3 * (c.hidden_size + 8) + 2 * widest + 2 * 2 * widest + 64


def auto_cuda_chunk(info: ModelInfo, precision: str, budget: int = CUDA_CHUNK_BUDGET, grid: bool = False) -> int:
    """The largest power of two of points whose activations fit the budget, within [16k, 1M] (grid: a
    grid graph call's points)."""
    points = max(1, budget // (grid_bytes_per_point(info) if grid else chunk_bytes_per_point(info, precision)))
    return int(min(MAX_CUDA_CHUNK, max(MIN_CUDA_CHUNK, 1 << (points.bit_length() - 1))))


class SplitEngine:
    """The style session (the file's graph) and one pixel session of the chosen precision.

    bound: None for plain numpy calls (CPU), or the device ("cuda") whose memory keeps the weights and
    the chunks (I/O binding), GPU number device_id. "cpu" runs the bound path on the CPU, which tests use
    to check it."""

    def __init__(self, ort, style_session, pixel_session, info: ModelInfo, precision: str, bound: str | None,
                 device_id: int = 0, table: np.ndarray | None = None, grid_session=None, pixel_inputs=None,
                 batch_style=None):
        self.ort = ort
        self.style_session = style_session
        # several latents a call: batch_style (a session, or a function that makes it on first use) where
        # style_session takes one latent only, else style_session
        self._batch_style = batch_style
        # the pixel session, or a function that makes it on first use (with pixel_inputs: its inputs as
        # get_inputs() would list them), so that a model that only renders grids never opens it
        self._pixel_session = pixel_session
        self.grid_session = grid_session  # regular grids (runtime/graphcut.py FastPaths.grid), or None
        self.info = info
        self.precision = precision
        self.bound = bound
        self.device_id = device_id
        self.pixel_inputs = {i.name: i for i in (pixel_inputs or pixel_session.get_inputs())}
        self.pixel_weights = [n for n in self.pixel_inputs if n not in (COORDS, EMBEDDING)]
        grid_inputs = {i.name: i for i in grid_session.get_inputs()} if grid_session is not None else {}
        self.grid_weights = [n for n in grid_inputs if n not in GRID_INPUTS]
        self.weight_names = list(dict.fromkeys(self.pixel_weights + self.grid_weights))  # the style outputs
        self.dtypes = {n: _DTYPES[i.type] for n, i in {**grid_inputs, **self.pixel_inputs}.items()}
        self.table = self.host_table = None  # the session's table (an OrtValue when bound), its numpy copy
        if EMBEDDING in self.pixel_inputs:
            if table is None:  # version 2: the style graph hands it over, once per session
                table = self._style_outputs(np.zeros((1, info.style_dim), np.float32), np.ones(1, np.float32),
                                            [EMBEDDING])[0]  # [1, H, rows, columns]
                if len(self.pixel_inputs[EMBEDDING].shape) == 2:  # pixel graphs that gather texel rows
                    table = texel_rows(table)
            table = table.astype(self.dtypes[EMBEDDING], copy=False)  # version 3: runtime/graphcut.py's
            self.host_table = table
            self.table = ort.OrtValue.ortvalue_from_numpy(table, bound, device_id) if bound else table
        if bound:
            self.sync_options = ort.RunOptions()
            self.async_options = ort.RunOptions()
            self.async_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
            # ONNX Runtime's arena reuses a freed block only for requests that fit it, so grid calls of a
            # new shape (4096^2 after 1024^2) grow it by what the old blocks' sizes waste. A render whose
            # calls differ in shape from the last render's first makes a 1x1 call with these options, at
            # whose end the arena hands its unused regions back (benchmarks/results/grid-arena-h100.json)
            self.shrink_options = ort.RunOptions()
            self.shrink_options.add_run_config_entry("memory.enable_memory_arena_shrinkage",
                                                     f"{'cpu' if bound == 'cpu' else 'gpu'}:{device_id}")
        self.grid_shapes: set[tuple[int, int]] | None = None  # (rows, columns) of the last render's grid calls

    @property
    def pixel_session(self):
        self._pixel_session = _opened(self._pixel_session)
        return self._pixel_session

    def style_for(self, latents: int):
        """The style session that runs `latents` latents in one call."""
        if latents == 1 or self._batch_style is None:
            return self.style_session
        self._batch_style = _opened(self._batch_style)
        return self._batch_style

    def _style_outputs(self, z: np.ndarray, psi: np.ndarray, names: list[str],
                       extra: dict | None = None) -> list[np.ndarray]:
        return self.style_for(z.shape[0]).run(names, {**dict(zip(STYLE_INPUTS, (z, psi))), **(extra or {})})

    # -- style: once per latent --------------------------------------------------------------------
    def styles(self, z: np.ndarray, psi: np.ndarray, extra: dict | None = None) -> list:
        """Per latent: {name: array} for plain calls, a DeviceStyle for bound ones. extra: further
        inputs of the style session (runtime/wspace.py feeds w_avg)."""
        if not self.bound:
            arrays = self._style_outputs(z, psi, self.weight_names, extra)
            return [{n: a[b] for n, a in zip(self.weight_names, arrays)} for b in range(z.shape[0])]
        session = self.style_for(z.shape[0])
        binding = session.io_binding()
        for name, value in {**dict(zip(STYLE_INPUTS, (z, psi))), **(extra or {})}.items():
            binding.bind_cpu_input(name, value)
        for name in self.weight_names:
            binding.bind_output(name, self.bound, self.device_id)
        session.run_with_iobinding(binding, self.sync_options)
        values = binding.get_outputs()
        styles = []
        for b in range(z.shape[0]):
            slices = []
            for name, value in zip(self.weight_names, values):
                shape = list(value.shape())[1:]
                nbytes = int(np.prod(shape)) * np.dtype(self.dtypes[name]).itemsize
                slices.append((name, value, b * nbytes, shape, self.dtypes[name]))
            styles.append(DeviceStyle(slices))
        return styles

    # -- pixels: per chunk -------------------------------------------------------------------------
    def pixels(self, style: dict, coords: np.ndarray) -> np.ndarray:
        """CPU: coords [n, 2] -> rgb [n, 3] (thread-safe: sessions are)."""
        n = coords.shape[0]
        if n == 1:  # a single row takes the CPU matmul's GEMV path, which rounds differently: pad to two
            coords = np.concatenate([coords, coords])
        feeds = {COORDS: coords, **{name: style[name] for name in self.pixel_weights}}
        if self.table is not None:
            feeds[EMBEDDING] = self.table
        return self.pixel_session.run([RGB], feeds)[0][:n]

    def render_band(self, style: DeviceStyle, coords: np.ndarray, chunk: int) -> np.ndarray:
        """Bound: coords [n, 2] (one band) -> rgb [n, 3], in chunks queued back to back."""
        ort, n, device, index = self.ort, coords.shape[0], self.bound, self.device_id
        points = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(coords, dtype=np.float32), device, index)
        out = ort.OrtValue.ortvalue_from_shape_and_type([n, 3], np.float32, device, index)
        binding = self.pixel_session.io_binding()
        if self.table is not None:
            binding.bind_ortvalue_input(EMBEDDING, self.table)
        self._bind_weights(binding, style, self.pixel_inputs)
        starts = range(0, n, chunk)
        for k, start in enumerate(starts):
            m = min(chunk, n - start)
            binding.bind_input(COORDS, device, index, np.float32, [m, 2], points.data_ptr() + 8 * start)
            binding.bind_output(RGB, device, index, np.float32, [m, 3], out.data_ptr() + 12 * start)
            last = k == len(starts) - 1  # the last call waits for the queue: then the band is done
            self.pixel_session.run_with_iobinding(binding, self.sync_options if last else self.async_options)
        return out.numpy()

    def render_pieces(self, style, pieces: Iterable[tuple[int, np.ndarray]], chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        for start, coords in pieces:
            yield start, self.render_band(style, coords, chunk)

    def _bind_weights(self, binding, style: DeviceStyle, inputs) -> None:
        for name, value, offset, shape, dtype in style.slices:
            if name in inputs:
                binding.bind_input(name, self.bound, self.device_id, dtype, shape, value.data_ptr() + offset)

    # -- regular grids -----------------------------------------------------------------------------
    def render_grids(self, styles: list, xs: np.ndarray, ys: np.ndarray, chunk: int, uint8: bool = False) -> np.ndarray:
        """The grid graph: every style's colours on the grid of xs [w] (x' of each column) and ys [h]
        (y' of each row) -> [len(styles), h * w, 3] float32 (uint8: the 8-bit colours), row by row. A
        call takes whole rows up to `chunk` points (or a run of one row's columns when a row is longer).
        Bound: the calls of all styles are queued back to back, and only the last waits; the colours
        come back in one copy."""
        w, h = xs.shape[0], ys.shape[0]
        calls = list(grid_calls(h, w, chunk))
        xs, ys = np.ascontiguousarray(xs, np.float32), np.ascontiguousarray(ys, np.float32)
        name, dtype = (RGB8, np.uint8) if uint8 else (RGB, np.float32)
        if not self.bound:
            out = np.empty((len(styles), h * w, 3), dtype)
            for b, style in enumerate(styles):
                weights = {n: style[n] for n in self.grid_weights}
                for start, (c0, c1), (r0, r1) in calls:
                    rgb = self.grid_session.run([name], {"xs": xs[c0:c1], "ys": ys[r0:r1], **weights})[0]
                    out[b, start:start + rgb.shape[0]] = rgb
            return out
        ort, device, index = self.ort, self.bound, self.device_id
        columns = ort.OrtValue.ortvalue_from_numpy(xs, device, index)
        rows = ort.OrtValue.ortvalue_from_numpy(ys, device, index)
        out = ort.OrtValue.ortvalue_from_shape_and_type([len(styles), h * w, 3], dtype, device, index)
        size = 3 * np.dtype(dtype).itemsize  # bytes per point
        shapes = {(r1 - r0, c1 - c0) for _, (c0, c1), (r0, r1) in calls}
        shrink, self.grid_shapes = self.grid_shapes is not None and shapes != self.grid_shapes, shapes
        inputs = set(self.grid_weights)
        for b, style in enumerate(styles):
            binding = self.grid_session.io_binding()
            self._bind_weights(binding, style, inputs)
            first = shrink and b == 0  # a 1x1 call ahead, after which the unused regions go (its colour is rewritten)
            calls_now = [(0, (0, 1), (0, 1)), *calls] if first else calls
            for k, (start, (c0, c1), (r0, r1)) in enumerate(calls_now):
                binding.bind_input("xs", device, index, np.float32, [c1 - c0], columns.data_ptr() + 4 * c0)
                binding.bind_input("ys", device, index, np.float32, [r1 - r0], rows.data_ptr() + 4 * r0)
                n = (c1 - c0) * (r1 - r0)
                binding.bind_output(name, device, index, dtype, [n, 3], out.data_ptr() + size * (b * h * w + start))
                last = b == len(styles) - 1 and k == len(calls_now) - 1
                options = self.sync_options if last else self.async_options
                self.grid_session.run_with_iobinding(binding, self.shrink_options if first and k == 0 else options)
        return out.numpy()


def _opened(session):
    """A session, or a function that makes one (a session opened on first use): the session."""
    return session if hasattr(session, "run") else session()


def grid_calls(height: int, width: int, chunk: int) -> Iterator[tuple[int, tuple[int, int], tuple[int, int]]]:
    """(first flat index, (first, end) column, (first, end) row) of each grid-graph call: whole rows,
    as many as fit in chunk points (at least one), or runs of chunk columns of one row."""
    if width <= chunk:
        step = max(1, chunk // width)
        for r0 in range(0, height, step):
            yield r0 * width, (0, width), (r0, min(height, r0 + step))
        return
    for r in range(height):
        for c0 in range(0, width, chunk):
            yield r * width + c0, (c0, min(width, c0 + chunk)), (r, r + 1)


def band_size(chunk: int, total: int) -> int:
    """Points per band on CUDA: a whole number of chunks, at most BAND_POINTS unless one chunk is larger."""
    return max(chunk, min(total, BAND_POINTS) // chunk * chunk) if total > chunk else max(total, 1)
