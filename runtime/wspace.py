"""The generator addressed by its mapped latent w instead of z, from any existing cips-edge file.

The file's graph (formats 1 and 3: the whole generator; format 2: the style part) takes z and computes
w = mapping(z) inside, then truncates it, w' = w_avg + psi (w - w_avg), with w_avg a named initializer
(docs/onnx-format.md). A second style session, with no node changed, opens both ends:
- the mapped w (the first input of the truncation's Sub node) becomes an extra output;
- w_avg becomes an input (format 3: of the style model cut from the graph; formats 1 and 2: a graph
  input whose default is the stored value, which ONNX IR >= 4 allows).
Feeding w_avg := w' and truncation := 0 then gives w_avg + 0 (w - w_avg) = w' exactly, so the pixel part
runs on any w' we choose.
"""
from __future__ import annotations

import numpy as np

from . import graphcut, onnxproto
from cips_edge.core.errors import UserError
from cips_edge.core.format import OUTPUT, STYLE_INPUTS
from .model import CIPSModel
from .split import SplitEngine

W_AVG = "w_avg"  # the initializer name export gives the mean mapped latent (docs/onnx-format.md)


def _mapped_w(graph) -> str:
    """The name of the mapped latent w: the first input of the truncation's Sub(w, w_avg)."""
    subs = [n for n in graph.node if n.op_type == "Sub" and list(n.input[1:]) == [W_AVG]]
    if len(subs) != 1 or W_AVG not in {t.name for t in graph.initializer}:
        raise UserError("this model's graph has no single truncation step (w - w_avg): cannot find its "
                        "mapped latent w for a walk in w; use space z", params="space")
    return subs[0].input[0]


def _open_w(model_bytes: bytes, style_dim: int) -> tuple[bytes, str]:
    """A format-1 or -2 file with w_avg declared as an input and the mapped w as an output: (bytes, name of w)."""
    proto = onnxproto.parse(model_bytes)
    graph = proto.graph
    w_name = _mapped_w(graph)
    graph.input.append(onnxproto.value_info(W_AVG, onnxproto.FLOAT, [1, style_dim]))
    graph.output.append(onnxproto.value_info(w_name, onnxproto.FLOAT, ["batch", style_dim]))
    proto.ir_version = max(proto.ir_version, 4)  # initializers as optional inputs
    return proto.SerializeToString(), w_name


class WSpaceModel(CIPSModel):
    """A CIPSModel whose latents are mapped latents w [S] instead of z: every renderer accepts it in
    place of the model, and gives for w = mapped(z) what the model gives for z (tested). It is the same
    file on the same provider, precision and threads, with its own style part."""

    def __init__(self, model: CIPSModel):
        import onnxruntime as ort  # present: model is open

        vars(self).update(vars(model))  # the model's file, providers, precision and workers, shared
        vars(self).pop("_last_styles", None)  # styles of z, not of w
        if model.info.format_version >= 3:
            main = onnxproto.load(str(model.path), str(model.path))
            self._w_name = _mapped_w(main.graph)
            data = graphcut.FastPaths(main, model.info, model.precision, str(model.path),
                                      inputs=(*STYLE_INPUTS, W_AVG), extra_outputs=(self._w_name,)).style
            del main
        else:
            data, self._w_name = _open_w(model.path.read_bytes(), model.style_dim)
        base = model.session
        # the same session options and providers as the model's session (one thread per call on CPU)
        self.session = ort.InferenceSession(data, base.get_session_options(), providers=base.get_providers())
        self._w_avg = np.asarray(model.w_avg, dtype=np.float32)
        if model.engine is not None:  # formats 2 and 3: this style session, the model's pixel session
            e = model.engine
            self.engine = SplitEngine(ort, self.session, e.pixel_session, e.info, e.precision, e.bound, e.device_id,
                                      table=e.host_table)

    def mapped(self, z: np.ndarray) -> np.ndarray:
        """w = mapping(z), before truncation: [S] -> [S] float32 (one latent per call, as the model runs)."""
        z = np.asarray(z, dtype=np.float32).reshape(1, self.style_dim)
        feeds = {"z": z, "truncation": np.ones(1, np.float32), W_AVG: self._w_avg[None]}
        if self.engine is None:
            feeds["coords"] = np.zeros((1, 2, 2), np.float32)
        return self.session.run([self._w_name], feeds)[0][0]

    def truncate(self, w: np.ndarray, psi: float) -> np.ndarray:
        """w' = w_avg + psi (w - w_avg) in float32, the graph's own operations in the graph's order."""
        psi = np.float32(psi)
        return self._w_avg + psi * (np.asarray(w, dtype=np.float32) - self._w_avg)

    def styles(self, w: np.ndarray, truncation: np.ndarray) -> list:
        """One style per mapped latent: the graph run with w_avg := w' and psi 0, which gives w' exactly.
        w_avg is [1, S], so one latent per call."""
        zero_z, zero_psi = np.zeros((1, self.style_dim), np.float32), np.zeros(1, np.float32)
        out = []
        for w_b, psi in zip(w, truncation):
            target = self.truncate(w_b, psi)[None]
            if self.engine is None:
                out.append(target)
            else:
                out += self.engine.styles(zero_z, zero_psi, extra={W_AVG: target})
        return out

    def pixels(self, style, coords: np.ndarray) -> np.ndarray:
        """One latent's colours at coords [n, 2] -> [n, 3] (CPU), as CIPSModel.pixels."""
        if self.engine is not None:
            return self.engine.pixels(style, coords)
        n = coords.shape[0]
        points = coords[None] if n > 1 else np.repeat(coords[None], 2, axis=1)  # as CIPSModel.pixels
        feeds = {"z": np.zeros((1, self.style_dim), np.float32), "coords": points,
                 "truncation": np.zeros(1, np.float32), W_AVG: style}
        return self.session.run([OUTPUT], feeds)[0][0, :n]
