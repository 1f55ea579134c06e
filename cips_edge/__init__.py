"""cips-edge: the CIPS generator (Anokhin et al., CVPR 2021), its ONNX export and a torch-free renderer.

Subpackages: cips_edge (model, training, checkpoints; needs torch), cips_edge.export (torch -> ONNX),
cips_edge.runtime (onnxruntime + numpy only), cips_edge.cli and cips_edge.commands (the `cips` command).
Importing this package imports nothing heavy, so `cips_edge.runtime` stays torch-free.
"""
__version__ = "0.1.0"
