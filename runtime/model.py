"""A cips-edge ONNX file opened in ONNX Runtime: metadata checked, provider and precision chosen and
reported. Format 3 files run their fast paths, cut out of the file's graph (graphcut.py): the style
part once per latent and a pixel graph per chunk (split.py); format 2 files the same from their style
graph and metadata; format 1 files (one graph, z + coords -> rgb) run as they are, the style part
redone per chunk."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cips_edge.core.config import GeneratorConfig

from . import cuda_early, fuse_ops, graphcut, onnxproto
from cips_edge.core.errors import UserError, first_line
from cips_edge.core.files import check_input_file
from cips_edge.core.format import INPUTS, OUTPUT, PRECISIONS, STYLE_INPUTS, ModelInfo, parse_metadata
from .chunks import default_chunk
from .graphcut import FastPaths
from .split import SplitEngine, auto_cuda_chunk, band_size

DEVICES = ("auto", "cuda", "cpu", "tensorrt")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# CUDA provider: float32 matmuls in float32 (ONNX Runtime may default to TF32), and an arena that grows
# by what is asked rather than to the next power of two (bounded memory for big images).
CUDA_OPTIONS = {"use_tf32": "0", "arena_extend_strategy": "kSameAsRequested"}
TRT_CACHE = Path(os.environ.get("CIPS_TRT_CACHE", Path.home() / ".cache" / "cips-edge" / "tensorrt"))
_sessions = 0  # ONNX Runtime sessions opened in this process (session_opened)


def session_opened() -> bool:
    """Whether this process opened an ONNX Runtime session: its exit then tears down the runtime (with a
    GPU provider the CUDA libraries and context too), which a command line can skip once its work is
    written (cips_edge.cli; benchmarks/results/command-cpu2-64-teardown-ab.json)."""
    return _sessions > 0


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install 'cips-edge[cpu]' "
                        "(or 'cips-edge[gpu]' for CUDA)") from None
    # errors only: ONNX Runtime's default logger warns about provider registration on every session
    # (onnxruntime-gpu 1.31: "No registered plugin EP device found"); what runs is checked and reported here
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def available_providers() -> list[str]:
    return list(_onnxruntime().get_available_providers())


def count_parameters(config: GeneratorConfig) -> int:
    """Trainable parameters of the generator a config describes (what torch's numel sum gives)."""
    s, h = config.style_dim, config.hidden_size
    mapping = config.n_mlp * (s * s + s)
    fourier = config.coord_inputs * h + h
    table = h * config.size * config.table_width
    # modulated layer (in -> out): weight, modulation (style -> in, with bias), output bias
    layers = sum(o * i + s * i + i + o for i, o in config.layer_shapes)
    rgb_in = [config.synthesis_widths[(k + 1) * config.to_rgb_every - 1] for k in range(config.n_to_rgb)]
    to_rgbs = sum(3 * c + s * c + c + 3 for c in rgb_in)
    return mapping + fourier + table + layers + to_rgbs


def cuda_ops() -> tuple[str, tuple[str, ...]] | None:
    """($CIPS_CUDA_OPS, the cips.fast ops $CIPS_CUDA_OPS_FUSE picks: comma-separated names or all; unset or
    blank: fuse_ops.RENDER_OPS), or None where $CIPS_CUDA_OPS is unset or blank."""
    wanted = os.environ.get("CIPS_CUDA_OPS")
    if not wanted:
        return None
    picked = os.environ.get("CIPS_CUDA_OPS_FUSE", "")
    try:
        return wanted, fuse_ops.ops_named(picked) if picked.strip() else fuse_ops.RENDER_OPS
    except ValueError as e:
        raise UserError(f"CIPS_CUDA_OPS_FUSE={picked}: {e}") from None


def _with_cuda_ops(source: str | bytes, options) -> str | bytes:
    """A CUDA session's graph with the cips.fast fused ops (runtime/cuda_ops/, picked by cuda_ops()) where
    $CIPS_CUDA_OPS names the built library, which is registered on options before the graph is rewritten
    (a library onnxruntime cannot load is refused first); the graph as it is otherwise. Opt-in: the
    library is not part of the package."""
    if not isinstance(source, bytes):
        return source
    chosen = cuda_ops()
    if chosen is None:
        return source
    wanted, ops = chosen
    if not Path(wanted).is_file():
        raise UserError(f"CIPS_CUDA_OPS={wanted}: no such file (bash runtime/cuda_ops/build.sh builds it)")
    try:
        options.register_custom_ops_library(wanted)
    except Exception as e:  # onnxruntime's own error types
        raise UserError(f"CIPS_CUDA_OPS={wanted}: onnxruntime cannot load it: {first_line(e)}") from None
    return fuse_ops.for_cuda(source, ops)


def default_threads() -> int:
    """The cores this process may use (affinity and cgroup cpusets respected where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class CIPSModel:
    """A cips-edge file in ONNX Runtime sessions.

    device: "auto" (CUDA when this onnxruntime has it and it loads, else CPU), "cuda" (an error when
    CUDA cannot run: never a silent CPU run), "cpu", or "tensorrt" (the pixel graph on ONNX Runtime's
    TensorRT provider, an error where it does not load). `provider` is the provider that actually runs.

    precision (formats 2 and 3): the pixel graph to run, "fp32", "fp16" or "int8"; None: the file's own where
    the provider suits it (fp16 on a GPU, int8 on the CPU), else fp32. `precision` says what runs.

    threads (CPU): how many chunks run at once (None or 0: the cores this process may use). Each call
    runs on one thread: ONNX Runtime's multi-threaded matmul splits small and large calls differently,
    which changes float32 rounding with the chunk size (~3e-6 measured); one thread per call keeps every
    point's result independent of the chunk size and of the thread count, at the same speed.

    device_id (CUDA): which GPU, in CUDA's numbering (runtime/devices.py opens one session per GPU).
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None,
                 precision: str | None = None, device_id: int = 0):
        if cuda_early.wanted(device):  # CUDA's start-up beside the import of onnxruntime
            cuda_early.start(device_id)
        ort = self.ort = _onnxruntime()
        self.path = Path(path)
        self.device_id = device_id
        if device not in DEVICES:
            raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}", params="device")
        if threads is not None and threads < 0:
            raise UserError(f"threads must be 0 (automatic) or more, got {threads}", params="threads")
        check_input_file(self.path, "model", "an ONNX file")
        have = ort.get_available_providers()
        if device in ("cuda", "tensorrt") and CUDA not in have:
            raise UserError(f"device {device}: this onnxruntime ({ort.__version__}) has no CUDA provider "
                            f"(it has {', '.join(have)}); install 'cips-edge[gpu]' in place of [cpu]", params="device")
        cuda = device in ("cuda", "tensorrt") or (device == "auto" and CUDA in have)
        main = onnxproto.load(str(self.path), str(self.path))
        self.info: ModelInfo = parse_metadata({p.key: p.value for p in main.metadata_props}, str(self.path))
        self.engine: SplitEngine | None = None
        fast: FastPaths | None = None  # version 3: the fast paths cut from the file's graph
        if self.info.format_version >= 3:
            self._check_graph(main.graph.input, main.graph.output, INPUTS, (OUTPUT,))
            graphcut.check_against_graph(main, self.info, str(self.path))
            self.precision = self._precision(precision, cuda)
            fast = FastPaths(main, self.info, self.precision, str(self.path))
            style_source = fast.style_one
        else:
            style_source = str(self.path)
        del main
        self.session = self._session(style_source, cuda=cuda)
        self.providers = list(self.session.get_providers())
        if device in ("cuda", "tensorrt") and self.providers[0] != CUDA:
            raise UserError(f"device {device}: onnxruntime could not load its CUDA provider (CUDA/cuDNN "
                            "libraries missing or no GPU); use device cpu or fix the CUDA install",
                            params=("device", "device"))
        if self.providers[0] == CPU and len(self.providers) > 1:  # auto: CUDA did not load
            if fast is not None and precision is None and self.precision != self._precision(None, False):
                self.precision = self._precision(None, False)  # the CPU's choice, now that it runs there
                fast = FastPaths(onnxproto.load(str(self.path), str(self.path)), self.info, self.precision,
                                 str(self.path))
                style_source = fast.style_one
            self.session = self._session(style_source, cuda=False)
            self.providers = list(self.session.get_providers())
        self.workers = 1 if self.providers[0] == CUDA else (threads or default_threads())
        if self.info.format_version >= 2:
            if fast is None:  # version 2: the file's graph is the style part
                self._check_graph(self.session.get_inputs(), self.session.get_outputs(), STYLE_INPUTS, None)
                self.precision = self._precision(precision, self.providers[0] != CPU)
                pixel_source = self.info.pixel_graphs[self.precision]
            else:
                pixel_source = fast.pixel
            on_gpu = self.providers[0] == CUDA
            # the grid graph (regular grids) on the same provider; TensorRT builds engines for the pixel graph only
            grid = (self._session(fast.grid, cuda=on_gpu, cpu_threads=threads or default_threads())
                    if fast is not None and fast.grid is not None else None)

            def open_pixels():
                return self._session(pixel_source, cuda=on_gpu, tensorrt=device == "tensorrt")

            lazy = grid is not None and device != "tensorrt"  # opened when points are first rendered
            pixels = open_pixels if lazy else open_pixels()
            self.providers = list((grid if lazy else pixels).get_providers())
            if device == "tensorrt" and self.providers[0] != TENSORRT:
                raise UserError("device tensorrt: onnxruntime could not load its TensorRT provider "
                                "(TensorRT libraries missing?); use device cuda", params=("device", "device"))
            batch_style = None  # version 3: the style part for several latents a call, opened when first used
            if fast is not None:
                paths, on_gpu_style = fast, self.session.get_providers()[0] != CPU
                batch_style = lambda: self._session(paths.style, cuda=on_gpu_style)  # noqa: E731
            self.engine = SplitEngine(ort, self.session, pixels, self.info, self.precision,
                                      bound=None if self.providers[0] == CPU else "cuda", device_id=device_id,
                                      table=fast.table if fast is not None else None, grid_session=grid,
                                      pixel_inputs=fast.pixel_inputs if lazy else None, batch_style=batch_style)
        else:
            self._check_graph(self.session.get_inputs(), self.session.get_outputs(), INPUTS, (OUTPUT,))
            if precision not in (None, "fp32"):  # a typo gets the same answer: this file has fp32 only
                raise UserError(f"{self.path} is a format-1 file: it holds only fp32; re-export it with "
                                f"`cips export --precision {precision}`")
            self.precision = "fp32"

    def _session(self, source: str | bytes, cuda: bool, tensorrt: bool = False, cpu_threads: int = 1):
        ort = self.ort
        options = ort.SessionOptions()
        # CPU: parallel over chunks, one thread per call (see the class doc); the grid graph's calls run
        # one at a time, each on cpu_threads
        options.intra_op_num_threads = 0 if cuda else cpu_threads
        options.inter_op_num_threads = 1  # the graph is one chain: no parallel branches to run
        options.log_severity_level = 3  # errors only; provider fallbacks are reported by us
        providers: list = [CPU]
        if cuda:
            providers = [(CUDA, self._cuda_options()), CPU]
        if tensorrt:
            providers.insert(0, (TENSORRT, self._tensorrt_options()))
        elif cuda:
            source = _with_cuda_ops(source, options)
        try:
            try:
                session = ort.InferenceSession(source, options, providers=providers)
            except Exception:
                if not cuda:
                    raise
                # an onnxruntime-gpu older than the use_tf32 option refuses it: the rest still holds
                providers[-2] = (CUDA, {k: v for k, v in self._cuda_options().items() if k != "use_tf32"})
                session = ort.InferenceSession(source, options, providers=providers)
        except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            raise UserError(f"{self.path} is not a loadable ONNX model (truncated or another format?): "
                            f"{first_line(e)}") from None
        global _sessions
        _sessions += 1
        return session

    def _cuda_options(self) -> dict:
        return {"device_id": str(self.device_id), **CUDA_OPTIONS}

    def _tensorrt_options(self) -> dict:
        chunk = auto_cuda_chunk(self.info, self.precision)
        TRT_CACHE.mkdir(parents=True, exist_ok=True)
        return {"device_id": str(self.device_id), "trt_fp16_enable": "1" if self.precision == "fp16" else "0",
                "trt_engine_cache_enable": "1", "trt_engine_cache_path": str(TRT_CACHE),
                "trt_profile_min_shapes": "coords:1x2", "trt_profile_opt_shapes": f"coords:{chunk}x2",
                "trt_profile_max_shapes": f"coords:{chunk}x2"}

    def _precision(self, requested: str | None, gpu: bool) -> str:
        graphs = self.info.pixel_graphs
        if requested is not None:
            if requested not in PRECISIONS:
                raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}",
                                params="precision")
            if requested not in graphs:
                raise UserError(f"{self.path} holds no {requested} pixel graph (it has {', '.join(sorted(graphs))}); "
                                f"export it with `cips export --precision {requested}`")
            return requested
        suits = {"fp32": True, "fp16": gpu, "int8": not gpu}
        return self.info.precision if suits.get(self.info.precision, False) else "fp32"

    def _check_graph(self, found_inputs, found_outputs, inputs: tuple[str, ...], outputs: tuple[str, ...] | None) -> None:
        """The graph's inputs and outputs (anything with .name: a session's or a protobuf graph's) are
        the format's."""
        names = tuple(i.name for i in found_inputs)
        have = tuple(o.name for o in found_outputs)
        if names != inputs or (outputs is not None and have != outputs):
            raise UserError(f"{self.path} is not a cips-edge graph of format {self.info.format_version} "
                            f"(inputs {names}, outputs {have})")

    # -- what the file says --------------------------------------------------------------------
    @property
    def provider(self) -> str:
        """The execution provider that runs the pixels (the first one the session kept)."""
        return self.providers[0]

    @property
    def config(self) -> GeneratorConfig:
        return self.info.config

    @property
    def style_dim(self) -> int:
        return self.info.style_dim

    @property
    def w_avg(self) -> np.ndarray:
        return self.info.w_avg

    @property
    def provenance(self) -> dict:
        return self.info.provenance

    @property
    def parameter_count(self) -> int:
        return count_parameters(self.config)

    @property
    def on_device(self) -> bool:
        """Fast paths on a GPU: weights and chunks stay on the device (I/O binding)."""
        return self.engine is not None and self.engine.bound is not None

    @property
    def default_chunk(self) -> int:
        return default_chunk(self)

    @property
    def grid_ready(self) -> bool:
        """Whether regular grids run through the file's grid graph (fp16 files, fp16 precision)."""
        return self.engine is not None and self.engine.grid_session is not None

    @property
    def grid_chunk(self) -> int:
        """Points per grid-graph call when none is given: the activations' memory budget on a GPU; on
        the CPU each call runs on every core."""
        return default_chunk(self, grid=True)

    def grids(self, styles: list, xs: np.ndarray, ys: np.ndarray, chunk: int, uint8: bool = False) -> np.ndarray:
        """Every style's colours on the grid xs [w] x ys [h] (grid_ready models) -> [len(styles), h * w, 3]
        float32, or uint8 colours."""
        return self.engine.render_grids(styles, xs, ys, chunk, uint8)

    def piece_size(self, chunk: int, total: int) -> int:
        """Points the renderer hands over at once: a chunk, or on the GPU a band of chunks."""
        return band_size(chunk, total) if self.on_device else chunk

    # -- running -------------------------------------------------------------------------------
    def styles(self, z: np.ndarray, truncation: np.ndarray) -> list:
        """z [B, S], truncation [B] (float32) -> one opaque style per latent, for pixels()."""
        if self.engine is not None:
            return self.engine.styles(z, truncation)
        return [(z[b:b + 1], truncation[b:b + 1]) for b in range(z.shape[0])]

    def pixels(self, style, coords: np.ndarray) -> np.ndarray:
        """One latent's colours at coords [n, 2] -> [n, 3], one session call (CPU; thread-safe)."""
        if self.engine is not None:
            return self.engine.pixels(style, coords)
        n = coords.shape[0]
        if n == 1:  # a single row takes the CPU matmul's GEMV path, which rounds differently: pad to two
            coords = np.concatenate([coords, coords])
        z, psi = style
        return self.session.run([OUTPUT], {"z": z, "coords": coords[None], "truncation": psi})[0][0, :n]

    def cached_styles(self, z: np.ndarray, truncation: np.ndarray) -> list:
        """styles() of the latest (z, truncation) again when asked again: callers that hand run() one
        piece of an image at a time (runtime/stream.py, runtime/cluster.py) pay the style part once per latent."""
        key = (z.tobytes(), truncation.tobytes())
        cached = getattr(self, "_last_styles", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        styles = self.styles(z, truncation)
        self._last_styles = (key, styles)  # one assignment: safe for the threads that share the model
        return styles

    def run(self, z: np.ndarray, coords: np.ndarray, truncation: np.ndarray) -> np.ndarray:
        """All at once: z [B, S], coords [B, N, 2], truncation [B] (float32) -> rgb [B, N, 3]; on the CPU
        in default_chunk pieces over the worker threads (the result does not depend on them)."""
        assert z.ndim == 2 and coords.ndim == 3 and truncation.ndim == 1, (z.shape, coords.shape, truncation.shape)
        styles = self.cached_styles(z, truncation)
        if self.on_device:
            return np.stack([self.engine.render_band(s, c, self.default_chunk) for s, c in zip(styles, coords)])
        n, chunk = coords.shape[1], self.default_chunk
        jobs = [(s, np.ascontiguousarray(c[i:i + chunk])) for s, c in zip(styles, coords) for i in range(0, n, chunk)]
        with ThreadPoolExecutor(self.workers) as pool:
            parts = list(pool.map(lambda job: self.pixels(*job), jobs))
        per_latent = max(1, -(-n // chunk))
        return np.stack([np.concatenate(parts[b * per_latent:(b + 1) * per_latent] or [np.zeros((0, 3), np.float32)])
                         for b in range(len(styles))])
