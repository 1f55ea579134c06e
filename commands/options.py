"""Every option that more than one command takes, defined once: the same name, meaning and help on
each command. Used one by one (`model: ModelOpt = None`) or in bundles: a command decorated with
@bundled that has a parameter typed Rendering or ImageSize takes that bundle's options and gets them
as one object."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="cips-edge ONNX file (default: the packaged "
                                                                        "model)")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when it loads, else CPU), cuda (error if it cannot run), cpu, "
                                             "or tensorrt (ONNX Runtime's TensorRT provider; error if it cannot load)")]
PrecisionOpt = Annotated[Optional[str], typer.Option(help="pixel precision: fp32, fp16 or int8, if the model holds it "
                                                          "(default: the precision the file was exported with where "
                                                          "the device suits it (fp16 on a GPU, int8 on a CPU), else "
                                                          "fp32; the packaged model: fp16 on a GPU, fp32 on a CPU)")]
ThreadsOpt = Annotated[int, typer.Option(help="CPU threads, each running whole chunks; 0 = the cores this process "
                                              "may use")]
ChunkOpt = Annotated[Optional[int], typer.Option(help="points per ONNX Runtime call (default: 1024 on CPU (16384 for "
                                                      "format-1 files and grid graphs), smaller images split evenly "
                                                      "over the threads; on CUDA the largest power of two whose "
                                                      "activations fit ~2 GB, 16384-1048576)")]
TruncationOpt = Annotated[float, typer.Option(help="psi: 1 = none, smaller = closer to the average image")]
SEEDS_HELP = "seeds: 7, 0-15 or 1,2,5; repeatable"
SeedsOpt = Annotated[Optional[list[str]], typer.Option("--seeds", "--seed", help=f"{SEEDS_HELP} (required)")]
SeedOpt = Annotated[int, typer.Option(help="seed of the latent")]
SizeOpt = Annotated[int, typer.Option(help="width and height in pixels")]
WidthOpt = Annotated[Optional[int], typer.Option(help="width in pixels (default: --size)")]
HeightOpt = Annotated[Optional[int], typer.Option(help="height in pixels (default: --size)")]
ForceOpt = Annotated[bool, typer.Option(help="allow images beyond the per-side limit (16384 pixels)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="also print where the time went on stderr: "
                                                                  "start-up, session (opening the model), render, "
                                                                  "write, total, in ms")]
FpsOpt = Annotated[float, typer.Option(help="frames per second of the .gif/.mp4 (GIF rounds the delay to 1/100 s; "
                                            "at most 50)")]


def out_option(help: str):
    """--out / -o, with what this command writes."""
    return typer.Option("--out", "-o", help=help)


SEQUENCE_OUT = ".gif, .mp4 (needs the [video] extra) or .npy (raw float32 [frames, H, W, 3]), written atomically"


@dataclass(frozen=True)
class Rendering:
    """How a command renders: the model, where, in what precision, in what pieces, with what psi."""

    model: ModelOpt = None
    truncation: TruncationOpt = 1.0
    device: DeviceOpt = "auto"
    precision: PrecisionOpt = None
    chunk: ChunkOpt = None
    threads: ThreadsOpt = 0

    def open(self):
        """The CIPSModel these options ask for."""
        from .common import open_model

        return open_model(self.model, self.device, self.threads, self.precision)


@dataclass(frozen=True)
class ImageSize:
    """The size of an image or frame: --size, or --width and --height, within the per-side limit unless
    --force."""

    size: SizeOpt = 256
    width: WidthOpt = None
    height: HeightOpt = None
    force: ForceOpt = False


def bundled(command):
    """Each parameter of `command` typed as an option bundle becomes that bundle's options on the
    command line; the command is called with the bundle built from them."""
    signature = inspect.signature(command, eval_str=True)
    params, bundles = [], {}
    for p in signature.parameters.values():
        if not (inspect.isclass(p.annotation) and dataclasses.is_dataclass(p.annotation)):
            params.append(p)
            continue
        bundles[p.name] = p.annotation
        hints = typing.get_type_hints(p.annotation, include_extras=True)
        params += [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                                     annotation=hints[f.name]) for f in dataclasses.fields(p.annotation)]

    @functools.wraps(command)
    def wrapper(**options):
        for name, bundle in bundles.items():
            options[name] = bundle(**{f.name: options.pop(f.name) for f in dataclasses.fields(bundle)})
        return command(**options)

    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
