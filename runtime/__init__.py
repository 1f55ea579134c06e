"""Torch-free CIPS renderer: ONNX Runtime and numpy only (installed as cips_edge.runtime).

    model = CIPSModel("model.onnx", device="auto")       # or packaged_model(); model.provider: what runs
    rgb = render_image(model, latent_for_seed(7, model.style_dim), 512, 512)   # [H, W, 3] raw values
    write_output("cips-seed7.png", rgb)

Nothing here imports torch, directly or through cips_edge.model (tests check it in a subprocess
where `import torch` fails).
"""
from .coords import (FULL_FRAME, check_region, grid_chunks, load_coords, panorama_region, panorama_view, pixel_grid,
                     region_grid)
from cips_edge.core.errors import UserError
from cips_edge.core.format import FORMAT, FORMAT_VERSION, PRECISIONS, ModelInfo, packaged_model
from .image import MAX_SIDE, check_image_size, output_paths, output_pattern, prepare_output, psnr, psnr_uint8, to_uint8, write_output
from .latents import latent_for_seed, load_latent, parse_seeds
from .model import DEVICES, CIPSModel, available_providers, count_parameters
from .render import check_truncation, render_grid, render_image, render_images, render_points, run_chunks
from .devices import open_models, parse_devices
from .stream import STREAM_SUFFIXES, StreamRender, streams
from .fovea import FoveaPlan, fovea_plan, render_foveated
from .video import VIDEO_SUFFIXES, prepare_video, write_video
from .walk import lerp, slerp, walk_frames, walk_latents
from .zoom import zoom_frames, zoom_regions

__all__ = [
    "FULL_FRAME", "check_region", "grid_chunks", "load_coords", "pixel_grid", "region_grid", "UserError", "FORMAT",
    "FORMAT_VERSION", "PRECISIONS", "ModelInfo", "packaged_model", "MAX_SIDE", "check_image_size", "output_paths", "prepare_output",
    "output_pattern", "psnr", "psnr_uint8", "to_uint8", "write_output", "latent_for_seed", "load_latent", "parse_seeds", "DEVICES",
    "CIPSModel", "available_providers", "count_parameters", "check_truncation", "render_grid", "render_image", "render_images", "render_points", "run_chunks",
    "open_models", "parse_devices", "STREAM_SUFFIXES", "StreamRender", "streams",
    "FoveaPlan", "fovea_plan", "render_foveated", "VIDEO_SUFFIXES", "prepare_video", "write_video", "lerp", "slerp",
    "walk_frames", "walk_latents", "zoom_frames", "zoom_regions",
    "panorama_region", "panorama_view",
]
