"""Image-quality metrics for generators: multi-scale SWD (numpy only), and FID, KID and precision/recall
on Inception features (torch, imported only when those are asked for). Importing this package does
not import torch, so `cips eval` of an ONNX model runs on a torch-free machine (SWD only there).
"""
from cips_edge.imagefolder import decode_image, prepare_image

from .errors import MetricsError
from .evaluation import (SampleSource, check_request, evaluate, evaluate_draws, print_report, render, report_rows,
                         torch_device, write_report)
from .feature_metrics import feature_stats, fid_from_features, frechet_distance, kid, precision_recall
from .images import ImageSource, load_image_folder, load_images
from .sliced_wasserstein import swd
from .sources import generator_source, onnx_source

__all__ = [
    "MetricsError", "SampleSource", "check_request", "evaluate", "evaluate_draws", "print_report", "render",
    "report_rows", "torch_device", "write_report",
    "feature_stats", "fid_from_features", "frechet_distance", "kid", "precision_recall",
    "ImageSource", "decode_image", "load_image_folder", "load_images", "prepare_image", "swd",
    "generator_source", "onnx_source",
]
