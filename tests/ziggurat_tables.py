"""numpy's ziggurat tables for the normal sampler (ki_double, wi_double, fi_double), read from the numpy
that is installed, for the browser's port of numpy's normal sampler (runtime/view/static/latent.mjs).

The tables cannot be recomputed bit for bit: numpy's entries differ from the exact ziggurat by up to a
few hundred units in the last place, so the JavaScript must carry numpy's own values. They are
compiled into numpy's random modules; this finds them there by their first entries, checks that
they are a 256-layer ziggurat with the tail at R (each entry within 1e-12 of a recomputation in
double precision), and run as a script writes them as JavaScript:

    python tests/ziggurat_tables.py runtime/view/static/ziggurat.mjs

tests/test_web.py checks the JavaScript file against the installed numpy's tables.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

R = 3.6541528853610087963519472518  # the tail's start (numpy's ziggurat_nor_r)
LAYERS = 256


def _first_entries() -> dict[str, bytes]:
    return {
        "ki": np.array([0x000EF33D8025EF6A, 0, 0x000C08BE98FBC6A8], dtype="<u8").tobytes(),
        "wi": np.array([8.68362706080130616677e-16, 4.77933017572773682428e-17], dtype="<f8").tobytes(),
        "fi": np.array([1.0, 9.77101701267671596263e-01, 9.59879091800106665211e-01], dtype="<f8").tobytes(),
    }


def numpy_tables() -> dict[str, np.ndarray] | None:
    """{"ki": uint64 [256], "wi": float64 [256], "fi": float64 [256]} as compiled into numpy, or None
    where no module of numpy.random holds them."""
    folder = Path(np.random.__file__).parent
    wanted = _first_entries()
    for module in sorted(folder.glob("*.so")) + sorted(folder.glob("*.pyd")):
        data = module.read_bytes()
        found = {name: data.find(start) for name, start in wanted.items()}
        if all(i >= 0 for i in found.values()):
            return {name: np.frombuffer(data, dtype="<u8" if name == "ki" else "<f8", count=LAYERS, offset=i).copy()
                    for name, i in found.items()}
    return None


def reference() -> dict[str, np.ndarray]:
    """The ziggurat recomputed in double precision (Marsaglia and Tsang's recursion from R down, with
    the layer area v of the exact normal tail): within ~1e-13 of numpy's entries, not equal to them."""
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    v = R * f(R) + math.sqrt(math.pi / 2) * math.erfc(R / math.sqrt(2))  # every layer's area
    x = [0.0] * LAYERS
    x[-1] = R
    for i in range(LAYERS - 1, 1, -1):
        x[i - 1] = math.sqrt(-2 * math.log(v / x[i] + f(x[i])))
    scale = 2.0 ** 52  # 52 random bits give a layer's magnitude
    q = v / f(R)  # the base layer as a rectangle of the same area
    ki = [R / q * scale, 0.0] + [x[i - 1] / x[i] * scale for i in range(2, LAYERS)]
    wi = [q / scale] + [x[i] / scale for i in range(1, LAYERS)]
    fi = [1.0] + [f(x[i]) for i in range(1, LAYERS)]
    return {"ki": np.array(ki), "wi": np.array(wi), "fi": np.array(fi)}


def check(tables: dict[str, np.ndarray]) -> None:
    ref = reference()
    for name in ("ki", "wi", "fi"):
        got = tables[name].astype(np.float64)
        assert np.allclose(got, ref[name], rtol=1e-12, atol=0), name


def javascript(tables: dict[str, np.ndarray]) -> str:
    ki = ", ".join(f"0x{int(v):X}" for v in tables["ki"])  # < 2^52: exact as JavaScript numbers
    # repr is the shortest decimal that reads back as the same double, in Python and in JavaScript
    wi = ", ".join(repr(float(v)) for v in tables["wi"])
    fi = ", ".join(repr(float(v)) for v in tables["fi"])
    return (
        "// numpy's ziggurat tables for its normal sampler (ki_double, wi_double, fi_double), bit for bit.\n"
        "// Written by tests/ziggurat_tables.py from the tables compiled into numpy; do not edit.\n"
        f"export const KI = Object.freeze([{ki}]);\n"
        f"export const WI = Float64Array.of({wi});\n"
        f"export const FI = Float64Array.of({fi});\n"
    )


def main(out: str) -> None:
    tables = numpy_tables()
    if tables is None:
        sys.exit(f"no ziggurat tables found in numpy {np.__version__}'s random modules")
    check(tables)
    Path(out).write_text(javascript(tables))
    print(f"wrote {out} (numpy {np.__version__})")


if __name__ == "__main__":
    main(sys.argv[1])
