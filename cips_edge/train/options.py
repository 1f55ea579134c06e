"""Every training option in one frozen dataclass, checked up front. Imports nothing heavy (no torch),
so a command line can build its options from these fields without paying for torch."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from cips_edge.core.config import PRESETS
from cips_edge.core.format import packaged_model

AUGMENT_MODES = ("auto", "on", "off")
RECIPE_BATCH = 32  # the paper's global batch; --batch auto tries it first
# Below this many images 'auto' turns DiffAugment on: the StyleGAN2-ADA and DiffAugment papers show D
# overfitting (and FID rising) at 1k-10k images and still a clear gain at ~30k; at FFHQ's 70k
# plain StyleGAN2 no longer overfits.
AUGMENT_AUTO_BELOW = 30_000
MIN_SIZE, MAX_SIZE = 8, 1024  # the discriminator needs a power of two it can halve down to 4x4
TRAIN_METRICS = ("swd", "fid")  # what --metrics can log while training (cips eval has KID and P/R too)
SWD_MIN_SIZE = 16  # SWD's coarsest pyramid level
# A new D beside a trained G (--init-from a model file): D alone for this long first, about 3,900 steps of
# batch 128, so that G's first gradients come from a D that already tells its images from the data (on the
# emoji set under DiffAugment, D alone beside the packaged generator parted the mean logits by 0.006 after
# 200 kimg and by 0.027 after 486 kimg).
D_WARMUP_KIMG = 500.0
MAX_PANORAMA = 64  # frames around a panorama: a 64:1 strip, beyond any panorama photo (they run about 2:1 to 8:1)


class TrainError(ValueError):
    """A problem the user can fix (options, data, run folder); the message is one line."""


PATH_FIELDS = ("data", "out", "init_from", "inception_weights")
PACKAGED = "packaged"  # --init-from packaged: the model cips-edge ships


def opt(default, help: str):
    """A field with its help text, so the command line (and --help) reads the same words."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainOptions:
    # -- what to train on, where to write --------------------------------------------------------
    data: Path | None = opt(None, "folder (subfolders too) or .zip of png/jpg/webp images; on resume, "
                                  "defaults to the run's own")
    out: Path | None = opt(None, "run folder to create; default cips-runs/<number>-<data>-<preset>. "
                                 "With --resume: the run to continue (default: newest under cips-runs)")
    resume: bool = opt(False, "continue the run in --out from its newest checkpoint, exactly")
    init_from: Path | None = opt(None, "start a new run from the weights (G, D and the EMA generator) of another "
                                       "cips-edge run: its folder (newest checkpoint) or a checkpoint file. Same "
                                       "model shapes (preset, size, panorama, D widths); everything else, such as "
                                       "--lr, --r1-gamma or the data, may differ. Or from a cips-edge model file "
                                       "(.onnx, e.g. one `cips export` wrote): its generator, with the same preset, "
                                       "size and panorama, and a new discriminator of any widths (see "
                                       "--d-warmup-kimg); `packaged` is the model cips-edge ships (a file or "
                                       "folder of that name here comes first). Adam starts afresh and --kimg "
                                       "counts this run's own images")
    # -- the model -----------------------------------------------------------------------------
    preset: str = opt("edge-64", f"generator preset: {', '.join(PRESETS)}")
    size: int | None = opt(None, f"training size override (power of two, {MIN_SIZE}..{MAX_SIZE}); "
                                 "default: the preset's")
    panorama: int = opt(0, "N > 0 trains a 360-degree panorama model N frames around: each image is the whole "
                           "circle, resized to N*size x size, and G and D work on size x size crops at random "
                           "angles (docs/training.md); 0 = flat images")
    d_channel_multiplier: int = opt(2, "discriminator widths as StyleGAN2: min(16384 * m / res, max)")
    d_channel_max: int | None = opt(None, "discriminator width cap; default 512 (32 for the tiny preset)")
    # -- the recipe (the paper's defaults) -------------------------------------------------------
    batch: int | str = opt(RECIPE_BATCH, "global batch, split evenly over processes (the paper: 32 = 8 GPUs x 4); "
                                         "auto: the largest that fits in GPU memory, trying one training step at "
                                         f"each of {RECIPE_BATCH}, {RECIPE_BATCH // 2}, {RECIPE_BATCH // 4}, ... "
                                         "(several GPUs: their number times a power of two); on CPU "
                                         f"{RECIPE_BATCH}")
    kimg: float = opt(5000.0, "training length in thousands of real images shown to D")
    lr: float = opt(0.002, "Adam learning rate for G and D (betas 0, 0.99)")
    r1_gamma: float = opt(10.0, "R1 penalty weight gamma on reals")
    r1_every: int = opt(16, "apply R1 lazily every this many steps (scaled up by as much)")
    ema_kimg: float = opt(10.0, "half-life of the EMA generator in thousands of images")
    d_warmup_kimg: float | None = opt(None, "thousands of images at the start that train D alone, G and its EMA "
                                            "held, so that a new discriminator catches up with a trained "
                                            "generator (under DiffAugment about 500 on the emoji set: "
                                            f"docs/training.md); default {D_WARMUP_KIMG:g} with --init-from a "
                                            "model file (.onnx), else 0")
    augment: str = opt("auto", f"DiffAugment (colour, translation, cutout) on reals and fakes: on, off, "
                               f"auto = on below {AUGMENT_AUTO_BELOW:,} images")
    xflip: bool = opt(True, "mirror real images left-right at random (the original does)")
    g_lazy_correction: bool = opt(True, "scale G's Adam by c = 4/5 (lr * c, betas ** c) like the original, "
                                        "which keeps StyleGAN2's path-length correction though it has no "
                                        "path-length term")
    seed: int = opt(0, "seed for weights, batches, latents and augmentation")
    # -- what you see and keep -----------------------------------------------------------------
    checkpoint_kimg: float = opt(100.0, "write a checkpoint every this many kimg (and at the end / Ctrl-C)")
    keep_checkpoints: int = opt(5, "keep only the newest this many checkpoints")
    sample_kimg: float = opt(20.0, "write a sample grid of the EMA generator every this many kimg")
    sample_grid: int = opt(4, "the sample grid shows N x N latents: seeds 0 to N*N-1, row by row, drawn as "
                              "`cips render --seed` draws them")
    log_every: int = opt(20, "steps between reading losses off the device (one host sync each)")
    # -- image quality while training (rank 0 evaluates the EMA generator; see docs/training.md) ---
    metrics: tuple[str, ...] = opt((), f"metrics of the EMA generator to log every --metrics-kimg: "
                                       f"comma-separated from {', '.join(TRAIN_METRICS)} (fid needs "
                                       f"--inception-weights); none by default")
    metrics_kimg: float = opt(200.0, "evaluate --metrics every this many kimg (and at the end of the run)")
    metrics_samples: int = opt(1000, "images per evaluation: EMA samples of seeds 0..N-1 against as many "
                                     "training images (a fixed subset; at most the data set); SWD is noisy "
                                     "below ~1000")
    inception_weights: Path | None = opt(None, "FID's Inception weights file, "
                                               "pt_inception-2015-12-05-6726825d.pth (docs/metrics.md) (default: "
                                               "none; --metrics fid needs it)")
    # -- machine -------------------------------------------------------------------------------
    device: str = opt("auto", "auto (cuda if available), cpu, cuda, cuda:N; under torchrun: cuda:LOCAL_RANK")
    bf16: bool = opt(True, "bfloat16 autocast for G and D forward on CUDA (R1 and losses stay fp32); "
                           "ignored on CPU")
    compile: bool = opt(True, "torch.compile G and the discriminator's forward on CUDA (and R1, see --r1-compile): "
                              "about a minute of compiling at start, then 2.3x the images/s of eager for "
                              "paper-256 on an H200; ignored on CPU")
    cudnn_benchmark: bool = opt(False, "let cuDNN time its convolution algorithms at the start (CUDA): its trials "
                                       "borrow whatever GPU memory is free, so the first step can peak far above "
                                       "the later ones, for 0.1 to 1 percent more images/s")
    r1_bf16: bool | None = opt(None, "R1's forward and double backward under bf16 autocast on CUDA (the penalty "
                                     "summed in float32; rounds differently). Default: on with --bf16 where R1's "
                                     "input gradient is explicit (--r1-explicit, the compiled step): there R1 "
                                     "takes 56 ms against float32's 122 at 64x64 batch 128 on an H100, and "
                                     "trains the emoji recipe within the noise between two --plain seeds "
                                     "(docs/training.md); off elsewhere (autograd's bf16 double backward is "
                                     "slower than float32's: 202 against 170 ms)")
    r1_compile: bool = opt(True, "with --compile: R1 compiled too, as torch.func's gradient of its input "
                                 "gradient's norm (the first R1 step runs eager, the second compiles; rounds "
                                 "differently from autograd's double backward): about 5 percent more images/s")
    r1_explicit: bool = opt(True, "with --r1-compile: D's input gradient in R1 formed layer by layer, each "
                                  "convolution's as a transposed convolution, so R1's weight gradients run as "
                                  "cuDNN's weight-gradient kernels: R1 1.4x faster and 2.3 GB less at 64x64 "
                                  "batch 128 on an H100 (same values to float64 rounding; rounds differently "
                                  "in float32)")
    rgb_grad: bool = opt(True, "with --compile: each ToRGB's gradient into its input as three multiply-adds "
                               "inside the pass that reads it, not a GEMM of its own (rounds differently)")
    d_pair: bool = opt(True, "with --compile: D's step runs reals and fakes through D in one call of twice "
                             "the batch, with the same minibatch-stddev groups as two calls (rounds differently)")
    d_forms: bool = opt(True, "with --compile: D's blurs as sixteen shifted terms and its from_rgb as three "
                              "multiply-adds, each inside the passes around it, so fewer whole activations are "
                              "stored and read back: 1.02x the images/s and 1.3 GB less with --fused-layers for "
                              "the authors' 64x64 model (ten 512-wide layers) at batch 128 on an H100 (rounds "
                              "differently)")
    act_blur: bool = opt(False, "with --compile on CUDA: each D block's first bias, leaky ReLU and blur as one "
                                "Triton kernel that reads the convolution's output once: with --fused-layers at "
                                "the authors' 64x64 model, batch 128 on an H100, 1,211.9 against 1,109.7 img/s, "
                                "the same memory (rounds differently; docs/training.md). Needs --r1-explicit "
                                "where R1 is compiled")
    recompute_g: bool = opt(False, "recompute G's per-pixel activations in its backward, one ToRGB group at "
                                   "a time: less memory at the cost of a second G forward per step")
    fused_layers: bool = opt(False, "G's per-pixel layers as one CUDA kernel each (product, bias, leaky ReLU "
                                    "and gain), their backward fused per ToRGB group: on an H100, 1.13x the "
                                    "images/s at paper-256 with 6.7 GB less memory, 1.02x at paper widths at 64x64 (at "
                                    "edge-64's narrower layers its kernels are slower than the unfused layers); "
                                    "trains the emoji recipe as well as the unfused step (rounds differently; "
                                    "docs/training.md). Hopper GPUs (H100, H200) with --bf16 and the kernels built "
                                    "in a source checkout by `bash cips_edge/train/cuda_ops/build.sh`; ignored on CPU")
    plain: bool = opt(False, "the original code's settings for comparisons: fp32 without TF32, NCHW, "
                             "for-loop Adam (overrides --bf16 and --compile); slower, same recipe")
    workers: int | None = opt(None, "threads decoding images once at start; default min(8, CPUs)")
    data_cache: bool = opt(True, "keep the decoded, resized images as RUN/data-cache/<fingerprint>.npy "
                                 "(resumes skip decoding)")

    def __post_init__(self) -> None:
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.init_from == Path(PACKAGED) and not self.init_from.exists():  # the word, not a folder of that name
            object.__setattr__(self, "init_from", packaged_model())
        # --metrics swd,fid on the command line; a list or tuple from Python or a stored run.
        names = self.metrics.split(",") if isinstance(self.metrics, str) else (self.metrics or ())
        object.__setattr__(self, "metrics", tuple(dict.fromkeys(n.strip() for n in names if n.strip())))
        problem = self._problem()
        if problem:
            raise TrainError(problem)

    def _problem(self) -> str | None:
        if self.preset not in PRESETS:
            return f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}"
        size = self.training_size
        if not (MIN_SIZE <= size <= MAX_SIZE and size & (size - 1) == 0):
            return (f"size {size} cannot be trained: the discriminator needs a power of two from "
                    f"{MIN_SIZE} to {MAX_SIZE}")
        if self.batch != "auto" and (type(self.batch) is not int or self.batch < 1):
            return f"--batch must be positive (a whole number) or auto, not {self.batch}"
        positive = {"kimg": self.kimg, "lr": self.lr, "r1_every": self.r1_every,
                    "ema_kimg": self.ema_kimg, "checkpoint_kimg": self.checkpoint_kimg,
                    "keep_checkpoints": self.keep_checkpoints, "sample_kimg": self.sample_kimg,
                    "sample_grid": self.sample_grid, "log_every": self.log_every,
                    "d_channel_multiplier": self.d_channel_multiplier, "metrics_kimg": self.metrics_kimg,
                    "metrics_samples": self.metrics_samples}
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                return f"--{name.replace('_', '-')} must be positive, not {value}"
        if not (type(self.panorama) is int and 0 <= self.panorama <= MAX_PANORAMA):
            return (f"--panorama must be 0 (flat images) or a number of frames from 1 to {MAX_PANORAMA}, "
                    f"not {self.panorama}")
        if self.d_warmup_kimg is not None and not (math.isfinite(self.d_warmup_kimg) and self.d_warmup_kimg >= 0):
            return f"--d-warmup-kimg must be >= 0, not {self.d_warmup_kimg}"
        if self.r1_gamma < 0:
            return f"--r1-gamma must be >= 0, not {self.r1_gamma}"
        if self.d_channel_max is not None and self.d_channel_max < 1:
            return f"--d-channel-max must be positive, not {self.d_channel_max}"
        if self.workers is not None and self.workers < 0:
            return f"--workers must be >= 0, not {self.workers}"
        if self.act_blur and self.r1_compile and not self.r1_explicit:
            return ("--act-blur needs --r1-explicit where R1 is compiled: compiled R1 through D's forward would "
                    "differentiate the kernel twice (or add --no-r1-compile)")
        if self.augment not in AUGMENT_MODES:
            return f"--augment must be one of {', '.join(AUGMENT_MODES)}, not {self.augment!r}"
        if self.data is None and not self.resume:
            return "no data: give a folder or .zip of images"
        return self._metrics_problem()

    def _metrics_problem(self) -> str | None:
        unknown = [m for m in self.metrics if m not in TRAIN_METRICS]
        if unknown:
            return f"unknown metric {unknown[0]!r} in --metrics; choose from {', '.join(TRAIN_METRICS)}"
        if self.metrics_samples < 2:
            return f"--metrics-samples must be at least 2, not {self.metrics_samples}"
        if "fid" in self.metrics and self.inception_weights is None:
            return ("--metrics fid needs --inception-weights PATH (the file pt_inception-2015-12-05-6726825d.pth, "
                    "see docs/metrics.md)")
        if self.inception_weights is not None and not self.inception_weights.is_file():
            return f"--inception-weights {self.inception_weights}: no such file"
        if "swd" in self.metrics and self.training_size < SWD_MIN_SIZE:
            return (f"--metrics swd needs a training size of at least {SWD_MIN_SIZE} (its coarsest level), "
                    f"not {self.training_size}")
        return None

    @property
    def init_is_model_file(self) -> bool:
        """--init-from names a model file (.onnx): a generator without its discriminator."""
        return self.init_from is not None and self.init_from.suffix.lower() == ".onnx"

    @property
    def warmup_kimg(self) -> float:
        """--d-warmup-kimg, or its default for this run."""
        if self.d_warmup_kimg is not None:
            return self.d_warmup_kimg
        return D_WARMUP_KIMG if self.init_is_model_file else 0.0

    @property
    def training_size(self) -> int:
        return self.size if self.size is not None else PRESETS[self.preset].size

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in PATH_FIELDS:
            d[name] = None if d[name] is None else str(d[name])
        d["metrics"] = list(self.metrics)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# The fields that define the run's trajectory: a resumed run keeps them, and one given now that differs
# from the run's is an error rather than silently ignored.
RECIPE_FIELDS = ("preset", "size", "panorama", "d_channel_multiplier", "d_channel_max", "batch", "lr", "r1_gamma",
                 "r1_every", "ema_kimg", "augment", "xflip", "g_lazy_correction", "seed", "init_from", "d_warmup_kimg")
# Never taken from the run: where it is, that this is a resume, and the device of this machine.
SESSION_FIELDS = ("out", "resume", "device")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def explicit_fields(given: "TrainOptions") -> set[str]:
    """The options set in `given` when the caller cannot say which were given (Python callers): those
    that differ from their defaults."""
    return {f.name for f in dataclasses.fields(TrainOptions) if getattr(given, f.name) != f.default}


def merge_for_resume(given: TrainOptions, stored: dict, explicit: set[str] | None = None) -> TrainOptions:
    """The run's own options (`stored`, as its checkpoint or options.json keeps them), except those given
    explicitly now (`explicit`: field names; default explicit_fields(given)). The recipe cannot change."""
    explicit = explicit_fields(given) if explicit is None else set(explicit)
    # Validated without the run's metrics: its weights file need not exist any more (checked below, if used).
    then = TrainOptions.from_dict({**stored, "resume": True, "metrics": (), "inception_weights": None})
    changes = {}
    for f in dataclasses.fields(TrainOptions):
        name = f.name
        if name in SESSION_FIELDS:
            continue
        now = getattr(given, name)
        if name == "data" and now is None:  # a resume without DATA trains on the run's own
            explicit.discard(name)
        run_value = stored.get(name, f.default) if name in ("metrics", "inception_weights") else getattr(then, name)
        if name == "batch" and now == "auto":  # a run's batch is fixed: auto finds it again
            explicit.discard(name)
        if name in explicit:
            if name in RECIPE_FIELDS and now != run_value:
                raise TrainError(f"{flag(name)} {now} differs from the run's {run_value}: a resumed run keeps its "
                                 "recipe (start a new run to change it)")
            continue
        changes[name] = run_value
    metrics = changes.get("metrics", given.metrics)
    if "inception_weights" in changes and "fid" not in (metrics or ()):
        changes["inception_weights"] = None  # only FID reads them
    return dataclasses.replace(given, **changes)


def resume_changes(merged: TrainOptions, stored: dict) -> list[str]:
    """What a resumed run does differently from its own options: ["--kimg 10 (the run had 5)", ...]."""
    then = TrainOptions.from_dict({**stored, "resume": True, "metrics": (), "inception_weights": None}).to_dict()
    then.update(metrics=list(stored.get("metrics") or []), inception_weights=stored.get("inception_weights"))
    now = merged.to_dict()
    shown = lambda v: ",".join(v) if isinstance(v, list) else v  # noqa: E731
    return [f"{flag(name)} {shown(now[name])} (the run had {shown(then[name])})" for name in now
            if name not in (*SESSION_FIELDS, "data") and now[name] != then[name]]
