"""Generator configuration: one frozen dataclass, stored in every checkpoint and ONNX file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a CIPSskip generator (no weights)."""

    size: int = 256  # training resolution; the coordinate-embedding table is size x size texels
    hidden_size: int = 512  # width of the Fourier features and of the coordinate embedding
    style_dim: int = 512  # width of z and w
    n_mlp: int = 8  # equalized-lr layers in the mapping network
    lr_mlp: float = 0.01  # learning-rate multiplier of the mapping network (a stored-weight scale)
    # Output width of every modulated layer after the input layer; the input layer (2*hidden -> w0)
    # has width synthesis_widths[0]. Paper: 512 x 10, then 256, 256, 128, 128.
    synthesis_widths: tuple[int, ...] = (512,) * 10 + (256, 256, 128, 128)
    to_rgb_every: int = 2  # a ToRGB skip after every this many modulated layers
    # 0: a flat image. N >= 1: a 360-degree panorama N frames around. The frame [-1, 1]^2 is then 1/N of
    # the circle: x' is arc length on a cylinder of circumference 2N (x' and x' + 2N are one point), the
    # Fourier features see (cos, sin) of the angle pi x' / N, and the coordinate table is size x N*size
    # texels wrapping around horizontally (cips_edge/model.py).
    panorama: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "synthesis_widths", tuple(int(c) for c in self.synthesis_widths))
        checks = [
            (self.size >= 2, "size must be at least 2"),
            (self.hidden_size >= 1 and self.style_dim >= 1, "hidden_size and style_dim must be positive"),
            (self.n_mlp >= 1, "n_mlp must be at least 1"),
            (len(self.synthesis_widths) >= 1, "synthesis_widths must not be empty"),
            (all(c >= 1 for c in self.synthesis_widths), "synthesis widths must be positive"),
            (self.to_rgb_every >= 1, "to_rgb_every must be at least 1"),
            (type(self.panorama) is int and self.panorama >= 0, "panorama must be 0 (flat) or a number of frames >= 1"),
            (len(self.synthesis_widths) % self.to_rgb_every == 0,
             "the number of synthesis widths must be a multiple of to_rgb_every"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid generator config: {message}")

    @property
    def coord_inputs(self) -> int:
        """Inputs of the Fourier features: (x', y'), or (R cos theta, R sin theta, y') on a cylinder."""
        return 3 if self.panorama else 2

    @property
    def table_width(self) -> int:
        """Texels of the coordinate table per row: size, or N*size around a panorama of N frames."""
        return self.size * max(1, self.panorama)

    @property
    def n_to_rgb(self) -> int:
        return len(self.synthesis_widths) // self.to_rgb_every

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every modulated layer, the input layer first."""
        widths = self.synthesis_widths
        shapes = [(2 * self.hidden_size, widths[0])]
        shapes += list(zip((widths[0],) + widths[:-1], widths))
        return shapes

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-adds of the per-pixel matmuls (Fourier features, modulated layers, ToRGBs)."""
        layers = sum(i * o for i, o in self.layer_shapes)
        rgb = sum(self.synthesis_widths[(k + 1) * self.to_rgb_every - 1] * 3 for k in range(self.n_to_rgb))
        return self.coord_inputs * self.hidden_size + layers + rgb

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["synthesis_widths"] = list(self.synthesis_widths)
        # Fields added since the first files were written appear only when set, so that a flat model's
        # checkpoint and ONNX metadata stay what earlier cips-edge versions read.
        for name, default in LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generator config keys: {sorted(unknown)}")
        return cls(**d)


LATER_FIELDS = {"panorama": 0}  # field -> the default that to_dict leaves out

PRESETS: dict[str, GeneratorConfig] = {
    # The paper's CIPSskip for 256x256 (44.3 M parameters, 6.8 MFLOP per pixel).
    "paper-256": GeneratorConfig(),
    # Edge model: ~0.7 MFLOP per pixel, so 256x256 renders in ~0.1 s and 1024x1024 in a few
    # seconds on 2 CPU cores; the table (128 x 64 x 64) is the largest tensor.
    "edge-64": GeneratorConfig(
        size=64, hidden_size=128, style_dim=256, n_mlp=4,
        synthesis_widths=(256, 256, 192, 192, 128, 128, 128, 128),
    ),
    # Same widths at 128x128 training resolution (4x the table, same cost per pixel).
    "edge-128": GeneratorConfig(
        size=128, hidden_size=128, style_dim=256, n_mlp=4,
        synthesis_widths=(256, 256, 192, 192, 128, 128, 128, 128),
    ),
    # For tests: a few thousand multiply-adds per pixel.
    "tiny": GeneratorConfig(
        size=16, hidden_size=16, style_dim=16, n_mlp=2, synthesis_widths=(32, 32, 32, 32),
    ),
}


def preset(name: str) -> GeneratorConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
