"""Lowering of RandomDraw: one counter-based kernel (splitmix64 bits from the stream's seed,
counter and draw id) producing uniform or normal (Box-Muller) numbers."""

from __future__ import annotations

import math

from .._scalar import S
from ..kernel_ir import Assign, For, Store, bitop, iadd, iconst, imul, local, var


class RandomLowering:
    """``op_*`` methods of ``Lowerer`` for symgraph.ops.random."""

    def op_RandomDraw(self, node, op):
        from ...ops.random import _GOLDEN, _M1, _M2
        state = self.view(node.inputs[0])
        out = self.out_view(node.outputs[0])
        n = out.size
        u64 = "int64"  # wrapping 64-bit arithmetic; ``shr`` is a logical shift

        def c64(v):
            v = int(v) % (1 << 64)
            return S.const(v - (1 << 64) if v >= 1 << 63 else v, u64)

        def mix(x):
            x = S.apply("add", x, c64(_GOLDEN))
            x = S.apply("mul", bitop("xor", x, bitop("shr", x, c64(30))), c64(_M1))
            x = S.apply("mul", bitop("xor", x, bitop("shr", x, c64(27))), c64(_M2))
            return bitop("xor", x, bitop("shr", x, c64(31)))

        seed = S.cast(state.load([iconst(0)]), u64)
        counter = S.cast(state.load([iconst(1)]), u64)
        base = mix(bitop("xor", seed, c64(int(op.draw_id) * int(_M1))))
        base = mix(bitop("xor", base, S.apply("mul", counter, c64(_M2))))
        i = var("i0")
        base_l = local("base", u64)

        def bits(k):
            return mix(S.apply("add", base_l, S.cast(k, u64)))

        def unit(bw, dtype):
            if dtype == "float64":
                return S.apply("mul", S.cast(bitop("shr", bw, c64(11)), "float64"),
                               S.const(2.0 ** -53, "float64"))
            return S.cast(S.apply("mul", S.cast(bitop("shr", bw, c64(40)), "float32"),
                                  S.const(2.0 ** -24, "float32")), dtype)

        if op.dist == "uniform":
            value = unit(bits(i), op.dtype)
        else:
            u1 = S.apply("sub", S.const(1.0, "float64"), unit(bits(imul(i, iconst(2))), "float64"))
            u2 = unit(bits(iadd(imul(i, iconst(2)), iconst(1))), "float64")
            r = S.apply("sqrt", S.apply("mul", S.const(-2.0, "float64"), S.apply("log", u1)))
            value = S.apply("mul", r, S.apply("cos", S.apply("mul", S.const(2 * math.pi, "float64"), u2)))
        body = [Assign("base", base), For("i0", n, [Store(out.storage, iadd(iconst(out.offset), i),
                                                         S.cast(value, out.dtype))])]
        self.emit(f"random_{op.dist}", body, n, [repr(state.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out
