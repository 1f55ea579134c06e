"""run(options): a whole training run. Sets up the run folder (or resumes one), loads the data once,
trains, and keeps the user informed; checkpoints periodically, at the end and on Ctrl-C / SIGTERM."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from cips_edge import __version__, legacy
from cips_edge.checkpoint import (DEFAULT_RUNS_DIR, CheckpointError, atomic_torch_save, generator_checkpoint,
                                  newest_checkpoint, read_checkpoint, resolve_checkpoint_path, run_checkpoints)
from cips_edge.core.config import LATER_FIELDS, PRESETS, GeneratorConfig
from cips_edge.core.files import clean_stale_temporaries, make_folders, remove_empty_folders, shown

from . import distributed, fit, fused_fc
from .data import Decoded, ImageBank, load_images
from .discriminator import DiscriminatorConfig
from .options import (AUGMENT_AUTO_BELOW, D_WARMUP_KIMG, RECIPE_BATCH, TrainError, TrainOptions, merge_for_resume,
                      resume_changes)
from .quality import QualityMetrics
from .report import (Reporter, atomic_write_json, grid_name, render_images, sample_latents, save_grid,
                     truncate_metrics)
from .trainer import Recipe, Speed, Trainer

TINY_D_CHANNELS = 32  # the tiny preset is for tests: a 512-wide D would dominate its run time
# A D whose mean logits on real and generated images are closer than this after its warm-up has not yet
# learnt to tell them apart (after 500 steps on the emoji set: 0.000 with DiffAugment, 0.06-0.13 without).
BLIND_GAP = 0.01


def checkpoint_name(images_seen: int) -> str:
    return f"ckpt-{images_seen:010d}.pt"


def resolve_device(name: str) -> torch.device:
    local = os.environ.get("LOCAL_RANK")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", name):
        raise TrainError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise TrainError(f"device {name} requested but CUDA is not available here")
    # Always carry an index: torch.cuda.set_device and per-device calls reject a bare "cuda".
    device = torch.device(name if ":" in name else f"cuda:{local or 0}")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise TrainError(f"{device} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(device)
    return device


def speed_for(options: TrainOptions, device: torch.device) -> Speed:
    """The fast-path switches the options ask for on this device (--plain: the original's settings)."""
    o = options
    if o.plain:
        return Speed()
    if o.fused_layers and device.type == "cuda":
        check_fused_layers(o, device)
    return Speed.for_device(device, o.bf16, o.compile, cudnn_benchmark=o.cudnn_benchmark, r1_bf16=o.r1_bf16,
                            r1_compile=o.r1_compile, r1_explicit=o.r1_explicit, rgb_grad=o.rgb_grad, d_pair=o.d_pair,
                            blur_shifts=o.d_forms, from_rgb_fma=o.d_forms, act_blur=o.act_blur,
                            recompute_g=o.recompute_g, fused_fc=o.fused_layers, fused_stack=o.fused_layers)


def check_fused_layers(options: TrainOptions, device: torch.device) -> None:
    """--fused-layers on CUDA: bf16, a Hopper GPU (the kernels are built for sm_90a) and the built library.
    Each refusal ends with the way out, for a resumed run that keeps the option from another machine."""
    if not options.bf16:
        raise TrainError("--fused-layers needs --bf16 (its kernels take bfloat16): drop --no-bf16 or give "
                         "--no-fused-layers")
    capability = torch.cuda.get_device_capability(device)
    if capability != (9, 0):
        raise TrainError(f"--fused-layers needs a Hopper GPU (compute capability 9.0): {device} is "
                         f"{torch.cuda.get_device_name(device)} ({capability[0]}.{capability[1]}); "
                         f"give --no-fused-layers")
    path = fused_fc.library_path()
    if path is None:
        raise TrainError(f"--fused-layers: the training kernels are not built; in a source checkout run "
                         f"`bash cips_edge/train/cuda_ops/build.sh` (needs nvcc, no GPU) or set "
                         f"{fused_fc.LIBRARY_ENV} to the built library, or give --no-fused-layers")
    try:
        abi = fused_fc.library_abi(path)
    except OSError as e:
        raise TrainError(f"--fused-layers: cannot load the training kernels at {path} ({str(e).splitlines()[0]}); "
                         f"run `bash cips_edge/train/cuda_ops/build.sh` again, or give --no-fused-layers") from None
    if abi != fused_fc.ABI:
        raise TrainError(f"--fused-layers: the training kernels at {path} were built from other sources; run "
                         f"`bash cips_edge/train/cuda_ops/build.sh` again, or give --no-fused-layers")


def steps_for(kimg: float, batch: int) -> int:
    """Steps of `batch` images that show kimg thousand images (the last one may go past)."""
    return math.ceil(round(kimg * 1000) / batch)


def generator_fields(stored: dict) -> dict:
    """A stored generator config with the fields that to_dict leaves out at their defaults filled in, so
    that a flat model's config and a panorama's compare field by field."""
    return {**LATER_FIELDS, **stored}


def check_init_shape(path: Path, what: str, now: dict, then: dict, same: str) -> None:
    """--init-from's source must have this run's shapes: one line naming the first field that differs."""
    for k in dict.fromkeys([*now, *then]):
        if now.get(k) != then.get(k):
            raise TrainError(f"--init-from {path}: its {what} has {k} {then.get(k)}, this run's has {now.get(k)}; "
                             f"give the same {same}")


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def rng_states() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": [version, list(internal), gauss]}


def restore_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class StopRequest:
    """Ctrl-C or SIGTERM asks to stop after the current step (then save); a second Ctrl-C quits at once.
    A SIGINT the process was started to ignore (`nohup`, a shell's background job) stays ignored."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def blind_discriminator_note(stats: dict, warmup_kimg: float) -> str | None:
    """The warning for a D that its warm-up left at chance (None when it tells the images apart)."""
    gap = stats["real_score"] - stats["fake_score"]
    if gap >= BLIND_GAP:
        return None
    return (f"after {warmup_kimg:g} kimg of warm-up D does not yet tell the generator's images from the data "
            f"(mean logits: real {stats['real_score']:+.4f}, generated {stats['fake_score']:+.4f}); with "
            f"DiffAugment on, a new D can need {D_WARMUP_KIMG:g} kimg alone (--d-warmup-kimg), and until it sees, "
            "G trains against a D at chance: docs/training.md")


def _count(module: torch.nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _next_run_dir(options: TrainOptions) -> Path:
    numbers = [int(m.group(1)) for p in (DEFAULT_RUNS_DIR.iterdir() if DEFAULT_RUNS_DIR.is_dir() else [])
               if (m := re.match(r"(\d+)-", p.name))]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(options.data).stem) or "data"
    return DEFAULT_RUNS_DIR / f"{max(numbers, default=-1) + 1:05d}-{stem}-{options.preset}"


# What a run writes into its folder; a folder holding only these (and no checkpoint) may be started again.
RUN_ENTRIES = frozenset({"options.json", "metrics.jsonl", "checkpoints", "samples", "data-cache", "tensorboard"})


def _started_options(run_dir: Path) -> dict | None:
    """The options a run folder without checkpoints was started with (its options.json), if readable."""
    try:
        return json.loads((run_dir / "options.json").read_text())["options"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Run:
    def __init__(self, options: TrainOptions, device: torch.device, world: distributed.World,
                 explicit: set[str] | None = None):
        self.options, self.device, self.world = options, device, world
        self.explicit = explicit  # the options the user gave (None: those that differ from the defaults)
        self.ckpt: dict | None = None
        self.init: dict | None = None  # --init-from's weights, for a run that starts now
        self.init_info: dict | None = None  # where they came from, kept in options.json and every checkpoint
        self.created_dir = False
        self.started = False  # the first step has begun
        self.notes: list[str] = []  # lines to show once the reporter exists

    # -- setting up ----------------------------------------------------------------------------
    def locate(self) -> None:
        """The run folder; on resume, its newest checkpoint and the run's own recipe."""
        o = self.options
        if o.resume:
            run_dir = o.out
            if run_dir is None:
                newest = newest_checkpoint(DEFAULT_RUNS_DIR)
                if newest is None:
                    raise TrainError(f"nothing to resume: no run with checkpoints under {DEFAULT_RUNS_DIR}/")
                run_dir = newest.parent.parent
            ckpts = run_checkpoints(run_dir)
            if not ckpts:
                self.options = self._restart(o, run_dir)
            else:
                try:
                    ckpt = read_checkpoint(ckpts[-1])
                except CheckpointError as e:
                    raise TrainError(str(e)) from None
                # Optimizer moments may be absent (a checkpoint slimmed to move it between machines):
                # the trainer then starts Adam afresh and says so.
                if not {"g", "d", "options"} <= set(ckpt):
                    raise TrainError(f"cannot resume from {ckpts[-1]}: it holds no training state")
                self.ckpt = ckpt
                self.options = dataclasses.replace(merge_for_resume(o, ckpt["options"], self.explicit), out=run_dir)
                changes = resume_changes(self.options, ckpt["options"])
                if changes:
                    self.notes.append(f"resuming with {', '.join(changes)}; every other option as the run had it")
        else:
            run_dir = o.out if o.out is not None else _next_run_dir(o)
            if run_dir.exists() and not run_dir.is_dir():
                raise TrainError(f"--out {shown(run_dir)} is a file, not a run folder: choose another --out")
            if run_dir.exists() and any(run_dir.iterdir()):
                hint = ("it has no checkpoint yet: --resume starts it again in place"
                        if not run_checkpoints(run_dir) else "pass --resume to continue it")
                raise TrainError(f"run folder {run_dir} already exists: {hint}, or choose another --out")
            self.options = dataclasses.replace(o, out=run_dir)
        if self.options.data is not None:  # recorded absolute, so a resume works from any folder
            self.options = dataclasses.replace(self.options, data=self.options.data.absolute())
        self.run_dir = run_dir

    def _restart(self, o: TrainOptions, run_dir: Path) -> TrainOptions:
        """--resume of a run stopped (killed, disk full) before its first checkpoint: nothing to continue,
        so it starts again in the same folder, with the options it was started with where it recorded them."""
        if not run_dir.is_dir():
            raise TrainError(f"cannot resume: {run_dir} does not exist")
        clean_stale_temporaries(run_dir)  # of writes that were killed with the run
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES)
        if foreign:
            raise TrainError(f"cannot resume: {run_dir} has no checkpoints, and {foreign[0]} in it is not part of "
                             "a run folder")
        stored = _started_options(run_dir)
        if stored is not None:
            o = merge_for_resume(o, stored, self.explicit)
        elif o.data is None:
            raise TrainError(f"cannot resume: {run_dir} has no checkpoint and no options.json to start it again "
                             "from; give the data set too (DATA --out RUN --resume)")
        self.notes.append(f"{run_dir} has no checkpoint yet: starting it from the beginning")
        return dataclasses.replace(o, out=run_dir, resume=False)

    def model_configs(self) -> tuple[GeneratorConfig, DiscriminatorConfig]:
        """The shapes of G and D that the options ask for."""
        o = self.options
        g_config = dataclasses.replace(PRESETS[o.preset], size=o.training_size, panorama=o.panorama)
        d_max = o.d_channel_max or (TINY_D_CHANNELS if o.preset == "tiny" else 512)
        return g_config, DiscriminatorConfig(o.training_size, o.d_channel_multiplier, d_max)

    def read_init(self) -> None:
        """--init-from: another run's newest checkpoint (or the file given), whose G and D must have this
        run's shapes; read before anything is created, so a wrong source leaves nothing behind."""
        source = self.options.init_from
        if self.options.init_is_model_file:
            return self.read_init_model(source)
        try:
            path = resolve_checkpoint_path(source)
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            raise TrainError(f"--init-from: {e}") from None
        if legacy.is_original_checkpoint(ckpt):
            raise TrainError(f"--init-from {path}: a checkpoint of the original CIPS code; its generator can be "
                             "exported (cips export) but its discriminator cannot be imported to train on")
        if not {"g", "d", "g_ema", "config", "d_config"} <= set(ckpt):
            raise TrainError(f"--init-from {path}: not a checkpoint of a cips-edge training run (it needs the "
                             "generator, the discriminator and their shapes)")
        g_config, d_config = self.model_configs()
        same = "preset, size, panorama and discriminator widths"
        check_init_shape(path, "generator", generator_fields(g_config.to_dict()), generator_fields(ckpt["config"]),
                         same)
        check_init_shape(path, "discriminator", d_config.to_dict(), ckpt["d_config"], same)
        self.init = {key: ckpt[key] for key in ("g", "d", "g_ema")}
        # with the source's own time and origin: the whole chain of runs stays traceable (training_total)
        self.init_info = {"path": str(path.absolute()), "images_seen": ckpt.get("images_seen"),
                          "options": ckpt.get("options"), "elapsed_s": ckpt.get("elapsed_s"),
                          "init_from": ckpt.get("init_from")}
        self.notes.append(f"starting from the weights of {path} ({ckpt.get('images_seen', 0) / 1000:g} kimg); "
                          "Adam starts afresh")

    def read_init_model(self, path: Path) -> None:
        """--init-from a model file: its generator (as G and as the EMA generator), which must have this
        run's shape; the discriminator starts afresh, trained alone for --d-warmup-kimg first."""
        try:
            from cips_edge.export import ExportError, generator_from_onnx
        except ImportError as e:  # the exporter's own checks need onnxruntime, which [train] alone lacks
            raise TrainError(f"--init-from a model file needs the exporter ({e.name} is missing): "
                             "pip install 'cips-edge[cpu]'") from None

        try:
            generator, info = generator_from_onnx(path)
        except ExportError as e:
            raise TrainError(f"--init-from: {e}") from None
        g_config, _ = self.model_configs()
        check_init_shape(path, "generator", generator_fields(g_config.to_dict()),
                         generator_fields(generator.config.to_dict()), "preset, size and panorama")
        weights = {k: v.detach().clone() for k, v in generator.state_dict().items()}
        self.init = {"g": weights, "d": None, "g_ema": weights}
        self.init_info = {"path": info["path"], "images_seen": info["images_seen"], "options": None,
                          "model_file": True, "provenance": info["provenance"]}  # how the file was made
        seen = info["images_seen"]
        trained = f" ({seen / 1000:g} kimg)" if seen else ""
        warmup = self.options.warmup_kimg
        d_part = (f"a new discriminator trains alone for the first {warmup:g} kimg (--d-warmup-kimg)" if warmup
                  else "a new discriminator trains beside it from the first step (--d-warmup-kimg 0)")
        self.notes.append(f"starting from the generator of {path}{trained}; {d_part}; Adam starts afresh")

    def load_data(self) -> Decoded:
        o, world = self.options, self.world
        workers = o.workers if o.workers is not None else min(8, os.cpu_count() or 1)
        cache_dir = self.run_dir / "data-cache" if o.data_cache else None
        size = o.training_size
        width = size * o.panorama if o.panorama else None  # a panorama is decoded whole, N frames wide
        decoded = load_images(o.data, size, workers, cache_dir, width=width) if world.is_main else None
        distributed.barrier(world)  # other ranks read rank 0's cache when the file system is shared
        if not world.is_main:
            decoded = load_images(o.data, size, workers, cache_dir, decode=False, width=width) if cache_dir else None
            decoded = decoded or load_images(o.data, size, workers, None, width=width)
        return decoded

    def check_data(self, decoded: Decoded, reporter: Reporter) -> None:
        o = self.options
        n = len(decoded.images)
        if decoded.skipped:
            name, reason = decoded.skipped[0]
            reporter.warn(f"skipped {len(decoded.skipped)} of {n + len(decoded.skipped)} files that could not "
                          f"be read as images (first: {name}: {reason})")
        if n < o.batch:
            raise TrainError(f"{o.data} has {n} usable image{'s' * (n != 1)}, fewer than the batch of "
                             f"{o.batch}: add images or lower --batch")
        if self.ckpt is not None:
            then = self.ckpt.get("data", {}).get("fingerprint")
            if then and then != decoded.fingerprint:
                reporter.warn(f"the data in {o.data} differ from the data this run was trained on "
                              "(names, sizes or dates changed)")

    # -- the run -------------------------------------------------------------------------------
    def execute(self) -> Path:
        o, world = self.options, self.world
        if o.batch != "auto" and o.batch % world.size:
            raise TrainError(f"--batch {o.batch} does not split evenly over {world.size} processes")
        self.locate()
        if self.ckpt is None and self.options.init_from is not None:
            self.read_init()
        distributed.barrier(world)  # every rank has checked the folder before rank 0 creates it
        o = self.options
        made: list[Path] = []  # the folders this run creates, the run's own first (cips-runs/ may be one)
        if world.is_main and not self.run_dir.exists():
            try:
                made = make_folders(self.run_dir)
            except OSError as e:
                raise TrainError(f"cannot create the run folder {shown(self.run_dir)}: {e.strerror or e}") from None
            self.created_dir = self.ckpt is None
        try:
            return self._train()
        except BaseException as e:
            # A run that fails or is stopped before its first step leaves nothing behind.
            if world.is_main and self.created_dir and not self.started:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                remove_empty_folders(made[1:])  # and the parents it made, while nothing else has come into them
            if isinstance(e, torch.OutOfMemoryError):
                raise TrainError(self.out_of_memory()) from None
            raise

    def out_of_memory(self) -> str:
        """The one line for a run that ran out of GPU memory: which option to lower. Nothing is written
        during a step, so the checkpoints already there stay as they were."""
        o = self.options
        what = f"batch {o.batch} ({o.preset} at {o.training_size}x{o.training_size}"
        what += f", {self.world.size} processes)" if self.world.size > 1 else ")"
        if self.run_dir.is_dir() and run_checkpoints(self.run_dir):
            return (f"out of GPU memory at {what}; the run's checkpoints are kept, and a run keeps its batch: "
                    f"free GPU memory and --resume, or start a new run with a lower --batch or --batch auto")
        return f"out of GPU memory at {what}: lower --batch or use --batch auto"

    def _train(self) -> Path:
        world, device = self.world, self.device
        start_images = self.ckpt["images_seen"] if self.ckpt else 0
        reporter = Reporter(self.run_dir, round(self.options.kimg * 1000), start_images, world.is_main)
        for note in self.notes:
            reporter.say(note)
        if self.ckpt is not None and self.ckpt["step"] >= self.total_steps():
            reporter.say(f"nothing to do: the run is at {start_images / 1000:g} kimg, --kimg is {self.options.kimg:g}")
            return self.run_dir
        o = self.options
        speed = speed_for(o, device)  # before the data: its refusals are the quicker ones
        decoded = self.load_data()
        n_images = len(decoded.images)
        augment = o.augment == "on" or (o.augment == "auto" and n_images < AUGMENT_AUTO_BELOW)
        g_config, d_config = self.model_configs()
        speed.apply_backend_flags(device)
        bank = ImageBank(decoded.images, device)
        if o.batch == "auto":
            batch, bank = self.auto_batch(lambda b, w: self.make_trainer(g_config, d_config, augment, speed, b, w),
                                          decoded, bank, reporter)
            self.options = o = dataclasses.replace(o, batch=batch)
        self.check_data(decoded, reporter)
        total_steps = self.total_steps()
        hold = steps_for(o.warmup_kimg, o.batch)
        trainer = self.make_trainer(g_config, d_config, augment, speed, o.batch, world, g_hold_steps=hold)
        trainer.use_bank(bank)
        step = 0
        elapsed0 = 0.0
        if self.init is not None:
            trainer.load_weights(self.init)
            self.init = None  # the run's own checkpoints hold the weights from here on
        if self.ckpt is not None:
            trainer.load_state_dict(self.ckpt)
            restore_rng_states(self.ckpt["rng"])
            step, elapsed0 = self.ckpt["step"], self.ckpt.get("elapsed_s", 0.0)
            if self.ckpt.get("world_size", 1) != world.size:
                reporter.warn(f"resuming a {self.ckpt.get('world_size', 1)}-process run with {world.size}: "
                              "it continues, but no longer replays the uninterrupted run exactly")
        self.data_info = {"path": str(o.data), "images": n_images, "fingerprint": decoded.fingerprint,
                          "skipped": len(decoded.skipped), "location": bank.location}
        self.meta = {"d_config": d_config.to_dict(), "augment_on": augment, "world_size": world.size,
                     "cips_edge_version": __version__}
        init_info = self.init_info or (self.ckpt or {}).get("init_from")
        if init_info:
            self.meta["init_from"] = init_info
        if world.is_main:
            atomic_write_json(self.run_dir / "options.json", {
                "options": o.to_dict(), "generator": g_config.to_dict(), "discriminator": d_config.to_dict(),
                "augment_on": augment, "data": self.data_info, "world_size": world.size,
                "batch_per_process": trainer.recipe.batch, "device": str(device), "speed": dataclasses.asdict(speed),
                "torch": torch.__version__, "cips_edge": __version__, "init_from": init_info})
            # A resume (or a restart after an early stop) replays what follows its checkpoint (or the start).
            truncate_metrics(self.run_dir / "metrics.jsonl", start_images)
        pano = f" crops of {o.panorama}-frame 360-degree panoramas" if o.panorama else ""
        reporter.say(
            f"{'resuming' if self.ckpt else 'training'} {o.preset} at {o.training_size}x{o.training_size}{pano} "
            f"(G {_count(trainer.G)}, D {_count(trainer.D)} params) on {n_images} images "
            f"({bank.location}); batch {o.batch} over {world.size} process(es) on {device}; "
            f"augment {'on' if augment else 'off'}; bf16 {'on' if speed.bf16 else 'off'}"
            f"{'; fused layers' if speed.fused_fc else ''} -> {self.run_dir}")

        ckpt_every = max(1, round(o.checkpoint_kimg * 1000))
        sample_every = max(1, round(o.sample_kimg * 1000))
        metrics_every = max(1, round(o.metrics_kimg * 1000))
        # Only rank 0 evaluates; the others go on and wait for it in the next step's all-reduce (the
        # process group's timeout is 30 minutes), so no rank waits on a collective the others skip.
        quality = None
        if o.metrics and world.is_main:
            # A panorama model is measured on square views: its frame [-1, 1]^2 against each image's first crop.
            reals = decoded.images[:, :, :o.training_size]
            quality = QualityMetrics(o.metrics, o.metrics_samples, reals, device, o.inception_weights)
            if quality.count < o.metrics_samples:
                reporter.warn(f"--metrics-samples {o.metrics_samples}: the data set has {quality.count} images, "
                              f"so each evaluation compares {quality.count}")
        fixed_z = sample_latents(o.sample_grid, g_config.style_dim).to(device)
        if world.is_main and self.ckpt is None:
            n = min(o.sample_grid ** 2, n_images)
            save_grid(np.asarray(decoded.images[:n]), self.run_dir / "samples" / "reals.png", o.sample_grid)
            self.save_samples(trainer, fixed_z, 0)

        first_step = step
        warmup_end = hold if step < hold else None  # D's warm-up ends in this process: check D then
        if step < hold and total_steps <= hold:
            reporter.warn(f"--kimg {o.kimg:g} ends within D's {o.warmup_kimg:g} kimg warm-up (--d-warmup-kimg): "
                          "G and its EMA do not train in this run")
        t_start = time.perf_counter()
        elapsed = lambda: elapsed0 + time.perf_counter() - t_start  # noqa: E731
        reporter.start(step * o.batch)
        self.started = True
        saved_at = None
        with StopRequest() as stop:
            try:
                while step < total_steps:
                    trainer.train_step(step)
                    if step == first_step and device.type == "cuda":
                        torch.cuda.empty_cache()  # hand back the workspace cuDNN's autotuning borrowed
                    prev_images, step = step * o.batch, step + 1
                    images = step * o.batch
                    reporter.advance(images)
                    at_log = step % o.log_every == 0 or step == total_steps
                    if at_log:
                        stats = trainer.read_stats()
                        reporter.log(step, images, elapsed(), stats)
                        if warmup_end is not None and step >= warmup_end:  # the first reading after it
                            note = blind_discriminator_note(stats, o.warmup_kimg)
                            if note:
                                reporter.warn(note)
                            warmup_end = None
                    stopping = stop.requested
                    if world.size > 1:  # ranks agree on stopping where they synchronise anyway
                        stopping = at_log and distributed.any_rank(stop.requested, device)
                    if world.is_main and images // sample_every > prev_images // sample_every:
                        self.save_samples(trainer, fixed_z, images)
                    if quality is not None and (images // metrics_every > prev_images // metrics_every
                                                or step == total_steps):
                        reporter.log_quality(step, images, quality(trainer.G_ema))
                    if images // ckpt_every > prev_images // ckpt_every or step == total_steps or stopping:
                        self.save_checkpoint(trainer, step, images, elapsed(), reporter)
                        saved_at = step
                    if stopping:
                        reporter.close()
                        reporter.say(f"stopped at {images / 1000:g} kimg; checkpoint saved. Continue with "
                                     f"--resume --out {self.run_dir}")
                        raise KeyboardInterrupt
            finally:
                reporter.close()
        assert saved_at == total_steps
        reporter.say(f"done: {total_steps * o.batch / 1000:g} kimg; checkpoints in {self.run_dir / 'checkpoints'}")
        return self.run_dir

    def total_steps(self) -> int:
        return steps_for(self.options.kimg, self.options.batch)

    def make_trainer(self, g_config, d_config: DiscriminatorConfig, augment: bool, speed: Speed, batch: int,
                     world: distributed.World, g_hold_steps: int = 0) -> Trainer:
        """A trainer of the run's recipe at global batch `batch` split over `world` (g_hold_steps: the D
        warm-up; none for --batch auto's trials, which must run G's step to measure it)."""
        o = self.options
        recipe = Recipe(batch=batch // world.size, lr=o.lr, r1_gamma=o.r1_gamma, r1_every=o.r1_every,
                        ema_half_life_kimg=o.ema_kimg, global_batch=batch, augment=augment, xflip=o.xflip,
                        g_lazy_correction=o.g_lazy_correction, seed=o.seed, g_hold_steps=g_hold_steps)
        return Trainer(g_config, d_config, recipe, self.device, world, speed)

    def auto_batch(self, make_trainer, decoded: Decoded, bank: ImageBank, reporter: Reporter
                   ) -> tuple[int, ImageBank]:
        """--batch auto: the recipe's batch, or on CUDA the largest candidate whose step fits (fit.py), each
        process trying on its own GPU. When the data set sits on the GPU and the recipe's batch does not
        fit beside it, the data move to host memory first: a smaller batch would change the recipe."""
        world, device = self.world, self.device
        candidates = [b for b in fit.candidate_batches(RECIPE_BATCH, world.size) if b <= len(decoded.images)]
        if not candidates or device.type != "cuda":
            return (candidates or [world.size])[0], bank

        def fits(batch: int, bank: ImageBank) -> bool:
            def single(per_process: int) -> Trainer:
                trainer = make_trainer(per_process, distributed.World())
                trainer.use_bank(bank)
                return trainer
            try:
                return fit.step_fits(single, batch // world.size, device)
            finally:
                torch._dynamo.reset()  # the run compiles its own batch's graphs, with static shapes

        found = fit.largest_fitting(candidates[:1], lambda b: fits(b, bank))
        rest = candidates[1:]
        if found is None and bank.location == "device":
            del bank
            fit.release_memory()
            bank = ImageBank(decoded.images, device, allow_device=False)
            reporter.say("--batch auto: the data set stays in host memory, to leave the GPU to training")
            rest = candidates
        if found is None:
            found = fit.largest_fitting(rest, lambda b: fits(b, bank))
        found = fit.agree(found or 0, world, device)
        name = torch.cuda.get_device_name(device)
        if not found:
            raise TrainError(f"out of GPU memory even at batch {candidates[-1]} ({self.options.preset} at "
                             f"{self.options.training_size}x{self.options.training_size}) on {name}")
        reporter.say(f"--batch auto: batch {found} fits on {name}"
                     + (f" ({found * 2} did not)" if found < candidates[0] else ""))
        return found, bank

    def save_samples(self, trainer: Trainer, z: torch.Tensor, images_seen: int) -> None:
        # ~262k points per forward keeps the extra memory next to training at about 1 GB (paper-256).
        grid = render_images(trainer.G_ema, z, chunk=max(1, 2 ** 18 // (trainer.size * trainer.width)))
        save_grid(grid, self.run_dir / "samples" / grid_name(images_seen), self.options.sample_grid)

    def save_checkpoint(self, trainer: Trainer, step: int, images_seen: int, elapsed_s: float,
                        reporter: Reporter) -> None:
        distributed.assert_same_weights(trainer.models, self.world)  # collective: every rank calls
        if not self.world.is_main:
            return
        state = _to_cpu(trainer.state_dict())
        others = {k: v for k, v in state.items() if k != "g_ema"}
        ckpt = generator_checkpoint(trainer.G_ema, step, images_seen, **others,
                                    options=self.options.to_dict(), rng=rng_states(), data=self.data_info,
                                    elapsed_s=elapsed_s, **self.meta)
        path = self.run_dir / "checkpoints" / checkpoint_name(images_seen)
        try:
            atomic_torch_save(ckpt, path)
        except CheckpointError as e:  # disk full, say: nothing half-written, the older checkpoints stay
            kept = run_checkpoints(self.run_dir)
            where = f"the run is kept at {kept[-1].name}" if kept else "the run has no checkpoint yet"
            raise TrainError(f"{e}; {where}: once there is space, continue with --resume --out {self.run_dir}") \
                from None
        for old in run_checkpoints(self.run_dir)[:-self.options.keep_checkpoints]:
            old.unlink(missing_ok=True)
        reporter.advance(images_seen)


def run(options: TrainOptions, explicit: set[str] | None = None) -> Path:
    """Train (or resume) a run; returns its folder. explicit: the names of the options the user gave,
    which a resume takes instead of the run's own (default: those that differ from their defaults).
    Raises TrainError for problems the user can fix, and KeyboardInterrupt after saving a checkpoint when
    stopped by Ctrl-C or SIGTERM."""
    device = resolve_device(options.device)
    world = distributed.init_from_env(device)
    try:
        out = Run(options, device, world, explicit).execute()
        # ranks tear their process group down together, not one while rank 0 still writes the last
        # checkpoint (a rank that leaves early can abort at exit); on an error the others may never come
        distributed.barrier(world)
        return out
    finally:
        distributed.shutdown(world)
