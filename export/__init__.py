"""torch -> ONNX export of a CIPS generator, checked against torch before it is kept
(installed as cips_edge.export; needs torch and onnx, i.e. the [train] extra).

    export_checkpoint("model.onnx", "cips-runs/00001-ffhq")      # what `cips export` does
    export_generator(generator, "model.onnx", precision="fp16")    # from a CIPSGenerator in memory
    generator, info = generator_from_onnx("model.onnx")           # and back (cips train --init-from)
"""
from .errors import ExportError
from .exporter import ExportReport, export_checkpoint, export_generator
from .graph import OPSET, build_onnx
from .pixels import pixel_graph
from .readback import generator_from_onnx
from .style import StyleGraph
from .verify import check_parity

__all__ = ["ExportError", "ExportReport", "export_checkpoint", "export_generator", "OPSET", "build_onnx",
           "pixel_graph", "StyleGraph", "check_parity", "generator_from_onnx"]
