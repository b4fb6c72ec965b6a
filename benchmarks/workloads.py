"""The benchmark workloads W1f..W6: sizes, seeded data and initial parameters.

Every peer builds its function from the same NumPy arrays, so outputs can be compared with the
hand-written NumPy version.  ``tiny=True`` shrinks every size for the smoke test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GELU_C = 0.7978845608  # sqrt(2 / pi), as written in the workload definition
GELU_A = 0.044715
LR = 0.01

WORKLOADS = ["w1f", "w1b", "w2", "w3", "w4", "w6"]
TITLES = {
    "w1f": "W1f GELU forward",
    "w1b": "W1b GELU gradient",
    "w2": "W2 MLP step",
    "w3": "W3 logreg step",
    "w4": "W4 convnet step",
    "w6": "W6 softmax-CE loss+grad",
}
# the unit each workload's times are printed in
UNITS = {"w1f": "ms", "w1b": "ms", "w2": "ms", "w3": "us", "w4": "ms", "w6": "ms"}


@dataclass
class Sizes:
    """Problem sizes; the defaults are the workloads of issue 6 / peers.md."""

    gelu_n: int = 2 ** 24
    mlp: tuple = (784, 1024, 1024, 10)
    mlp_batch: int = 512
    logreg_batch: int = 32
    logreg_features: int = 64
    conv_batch: int = 64
    conv_channels: tuple = (32, 64)
    conv_image: int = 28
    conv_classes: int = 10
    ce_shape: tuple = (4096, 1000)
    extra: dict = field(default_factory=dict)


TINY = Sizes(gelu_n=1000, mlp=(20, 16, 12, 10), mlp_batch=8, logreg_batch=8, logreg_features=5,
             conv_batch=2, conv_channels=(3, 4), ce_shape=(16, 7))


def sizes(tiny: bool) -> Sizes:
    return TINY if tiny else Sizes()


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def make_data(workload: str, s: Sizes) -> dict:
    """Inputs (``x``, ``y``/``labels``...) and initial parameters (``params``, a list) as float32."""
    if workload in ("w1f", "w1b"):
        return {"x": _rng(1).standard_normal(s.gelu_n).astype(np.float32) * 2}
    if workload == "w2":
        r = _rng(2)
        dims = s.mlp
        params = []
        for a, b in zip(dims[:-1], dims[1:]):
            params.append((r.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32))
            params.append(np.zeros(b, np.float32) + 0.01)
        x = r.standard_normal((s.mlp_batch, dims[0])).astype(np.float32)
        y = r.integers(0, dims[-1], s.mlp_batch).astype(np.int64)
        return {"x": x, "y": y, "params": params}
    if workload == "w3":
        r = _rng(3)
        x = r.standard_normal((s.logreg_batch, s.logreg_features)).astype(np.float32)
        y = (r.random(s.logreg_batch) < 0.5).astype(np.float32)
        w = (r.standard_normal(s.logreg_features) * 0.1).astype(np.float32)
        b = np.array(0.1, np.float32)
        return {"x": x, "y": y, "params": [w, b]}
    if workload == "w4":
        r = _rng(4)
        c1, c2 = s.conv_channels
        side = ((s.conv_image - 4) // 2 - 4) // 2
        dense_in = c2 * side * side
        params = [
            (r.standard_normal((c1, 1, 5, 5)) * np.sqrt(2.0 / 25)).astype(np.float32),
            np.zeros(c1, np.float32) + 0.01,
            (r.standard_normal((c2, c1, 5, 5)) * np.sqrt(2.0 / (25 * c1))).astype(np.float32),
            np.zeros(c2, np.float32) + 0.01,
            (r.standard_normal((dense_in, s.conv_classes)) * np.sqrt(1.0 / dense_in)).astype(np.float32),
            np.zeros(s.conv_classes, np.float32),
        ]
        x = r.random((s.conv_batch, 1, s.conv_image, s.conv_image)).astype(np.float32)
        y = r.integers(0, s.conv_classes, s.conv_batch).astype(np.int64)
        return {"x": x, "y": y, "params": params}
    if workload == "w6":
        r = _rng(6)
        logits = (r.standard_normal(s.ce_shape) * 3).astype(np.float32)
        labels = r.integers(0, s.ce_shape[1], s.ce_shape[0]).astype(np.int64)
        return {"logits": logits, "labels": labels}
    raise ValueError(f"unknown workload {workload!r}")


def bytes_moved(workload: str, s: Sizes) -> float | None:
    """Bytes counted for the GB/s figure (peers.md's convention), or None."""
    if workload in ("w1f", "w1b"):
        return 8.0 * s.gelu_n
    if workload == "w6":
        return 8.0 * s.ce_shape[0] * s.ce_shape[1]
    return None


def flops(workload: str, s: Sizes) -> float | None:
    """Floating-point operations counted for the GFLOP/s figure, or None."""
    if workload == "w2":
        return 6.0 * s.mlp_batch * sum(a * b for a, b in zip(s.mlp[:-1], s.mlp[1:]))
    return None


@dataclass(frozen=True)
class LimitWork:
    """The machine limit that bounds a workload from below and the work one call needs.

    ``kind`` is ``"memory"`` (``amount`` bytes, against the copy bandwidth: every byte counted
    is either read or written once) or ``"gemm"`` (``amount`` flop of the matrix products,
    against the BLAS GEMM rate at the square size ``gemm_n`` and against the FMA peak).
    """

    kind: str
    amount: float
    gemm_n: int = 0
    what: str = ""


def _gemm_flop(m: int, k: int, n: int) -> float:
    return 2.0 * m * k * n


def _gemm_size(shapes: list[tuple[int, int, int]]) -> int:
    """The square size standing for a set of GEMMs: the cube root of the largest ``m·k·n``."""
    return round(max(m * k * n for m, k, n in shapes) ** (1 / 3))


def limit_work(workload: str, s: Sizes) -> LimitWork | None:
    """What one call of ``workload`` has to do at least, from the shapes of its definition.

    - W1f / W1b: read x (4 bytes per element) and write the result (4 bytes): ``8 N`` bytes.
    - W6: read the logits and write their gradient (``8 B C`` bytes) plus the int64 labels.
    - W2 (MLP, layers ``in -> out``, batch ``B``): for every layer the forward product
      ``B x in @ in x out`` and the weight gradient, ``2 B in out`` flop each, and the input
      gradient of every layer but the first (x needs no gradient).  This is less than the
      ``6 B sum(in out)`` of the GFLOP/s column (peers.md's convention), which also counts the
      first layer's input gradient.  Elementwise work, the softmax and the update are not
      counted.
    - W4 (convnet) as im2col GEMMs: conv1 ``(B oh ow) x 25 @ 25 x c1`` (forward and weight
      gradient), conv2 ``(B oh ow) x 25 c1 @ 25 c1 x c2`` and the dense layer (forward, weight
      and input gradient each); ReLU, pooling and the loss are not counted.
    - W3: none; its arrays are a few KiB in cache, the step is call overhead.
    """
    if workload in ("w1f", "w1b"):
        return LimitWork("memory", 8.0 * s.gelu_n, what="x read + result written")
    if workload == "w6":
        b, c = s.ce_shape
        return LimitWork("memory", 8.0 * b * c + 8.0 * b, what="logits read + gradient written")
    if workload == "w2":
        layers = [(s.mlp_batch, a, b) for a, b in zip(s.mlp[:-1], s.mlp[1:])]
        flop = sum(2 * _gemm_flop(*g) for g in layers) + sum(_gemm_flop(*g) for g in layers[1:])
        return LimitWork("gemm", flop, _gemm_size(layers), "matmul flop, fwd + bwd")
    if workload == "w4":
        c1, c2 = s.conv_channels
        side1 = s.conv_image - 4
        side2 = side1 // 2 - 4
        dense_in = c2 * (side2 // 2) ** 2
        conv1 = (s.conv_batch * side1 * side1, 25, c1)
        conv2 = (s.conv_batch * side2 * side2, 25 * c1, c2)
        dense = (s.conv_batch, dense_in, s.conv_classes)
        flop = 2 * _gemm_flop(*conv1) + 3 * _gemm_flop(*conv2) + 3 * _gemm_flop(*dense)
        return LimitWork("gemm", flop, _gemm_size([conv1, conv2, dense]), "conv/dense flop, fwd + bwd")
    return None

