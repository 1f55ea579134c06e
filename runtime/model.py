"""A cips-edge ONNX file opened in ONNX Runtime: metadata checked, provider chosen and reported."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cips_edge.config import GeneratorConfig

from .errors import UserError
from .format import INPUTS, OUTPUT, ModelInfo, parse_metadata

DEVICES = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Points per session call when --chunk is not given. On CPU, chunks whose activations stay near the
# caches run as fast as larger ones (measured: 4k-16k points best on 2 cores, 64k ~20% slower); on
# CUDA, large chunks keep the GPU busy (see docs: 262,144 points ~ unchunked speed) at bounded memory.
DEFAULT_CHUNK = {CPU: 16_384, CUDA: 262_144}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install 'cips-edge[cpu]' "
                        "(or 'cips-edge[gpu]' for CUDA)") from None
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


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def default_threads() -> int:
    """The cores this process may use (affinity and cgroup cpusets respected where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class CIPSModel:
    """One ONNX Runtime session over a cips-edge file.

    device: "auto" (CUDA when this onnxruntime has it and it loads, else CPU), "cuda" (an error when
    CUDA cannot run: never a silent CPU run), or "cpu". `provider` is the provider that actually runs.

    threads (CPU): how many chunks run at once (None or 0: the cores this process may use). Each call
    runs on one thread: ONNX Runtime's multi-threaded matmul splits small and large calls differently,
    which changes float32 rounding with the chunk size (~3e-6 measured); one thread per call keeps every
    point's result independent of the chunk size and of the thread count, at the same speed.

    device_id (CUDA): which GPU, in CUDA's numbering (runtime/devices.py opens one session per GPU).
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None,
                 device_id: int = 0):
        ort = _onnxruntime()
        self.path = Path(path)
        self.device_id = device_id
        if device not in DEVICES:
            raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
        if threads is not None and threads < 0:
            raise UserError(f"--threads must be 0 (automatic) or more, got {threads}")
        if not self.path.is_file():
            what = "a folder, not an ONNX file" if self.path.is_dir() else "not found"
            raise UserError(f"model {what}: {self.path}")
        have = ort.get_available_providers()
        if device == "cuda" and CUDA not in have:
            raise UserError(f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA provider "
                            f"(it has {', '.join(have)}); install 'cips-edge[gpu]' in place of [cpu]")
        self.session = self._session(ort, cuda=device == "cuda" or (device == "auto" and CUDA in have))
        self.providers = list(self.session.get_providers())
        if device == "cuda" and self.providers[0] != CUDA:
            raise UserError("--device cuda: onnxruntime could not load its CUDA provider (CUDA/cuDNN "
                            "libraries missing or no GPU); use --device cpu or fix the CUDA install")
        if self.providers[0] == CPU and len(self.providers) > 1:  # auto: CUDA did not load
            self.session = self._session(ort, cuda=False)
            self.providers = list(self.session.get_providers())
        self.workers = 1 if self.provider == CUDA else (threads or default_threads())
        self._check_graph()
        self.info: ModelInfo = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))

    def _session(self, ort, cuda: bool):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 0 if cuda else 1  # CPU: parallel over chunks (see the class doc)
        options.inter_op_num_threads = 1  # the graph is one chain: no parallel branches to run
        options.log_severity_level = 3  # errors only; provider fallbacks are reported by us
        try:
            providers = [(CUDA, {"device_id": self.device_id}), CPU] if cuda else [CPU]
            return ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            raise UserError(f"{self.path} is not a loadable ONNX model (truncated or another format?): "
                            f"{_first_line(e)}") from None

    def _check_graph(self) -> None:
        names = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        if names != INPUTS or outputs != (OUTPUT,):
            raise UserError(f"{self.path} is not a cips-edge graph (inputs {names}, outputs {outputs}; "
                            f"expected {INPUTS} -> {OUTPUT})")

    # -- what the file says --------------------------------------------------------------------
    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first one the session kept)."""
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
    def default_chunk(self) -> int:
        return DEFAULT_CHUNK.get(self.provider, DEFAULT_CHUNK[CPU])

    # -- running -------------------------------------------------------------------------------
    def run(self, z: np.ndarray, coords: np.ndarray, truncation: np.ndarray) -> np.ndarray:
        """One session call: z [B, S], coords [B, N, 2], truncation [B] (float32) -> rgb [B, N, 3].
        Thread-safe (onnxruntime sessions are), so several chunks may run at once."""
        assert z.ndim == 2 and coords.ndim == 3 and truncation.ndim == 1, (z.shape, coords.shape, truncation.shape)
        n = coords.shape[1]
        if n == 1:  # a single row takes the CPU matmul's GEMV path, which rounds differently: pad to two
            coords = np.concatenate([coords, coords], axis=1)
        rgb = self.session.run([OUTPUT], {"z": z, "coords": coords, "truncation": truncation})[0]
        return rgb[:, :n]
