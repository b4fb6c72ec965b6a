"""llvm backend memory reuse: recycled output arrays and streaming stores."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import symgraph as sg
from symgraph.codegen.llvm_render import STREAM_MIN_BYTES


@pytest.fixture(autouse=True, params=["C call path", "Python call path"])
def call_path(request, monkeypatch):
    """Both call paths recycle outputs (the C one when it is built)."""
    if request.param == "Python call path":
        monkeypatch.setenv("SYMGRAPH_NO_FASTCALL", "1")
    return request.param


def _double(n=1000):
    x = sg.vector("x")
    return sg.compile([x], x * 2 + 1, backend="llvm")


def test_dropped_output_is_written_again():
    f = _double()
    x = np.arange(1000, dtype=np.float32)
    f(x)  # the first call of a shape signature specialises (on the Python path)
    first = f(x)
    address = first.ctypes.data
    del first
    second = f(x + 1)
    assert second.ctypes.data == address  # the dropped array was reused, not reallocated
    np.testing.assert_array_equal(second, (x + 1) * 2 + 1)


def test_held_output_is_never_overwritten():
    f = _double()
    x = np.arange(1000, dtype=np.float32)
    kept = f(x)
    view = f(x)[::2]  # a view keeps its base alive
    later = f(x + 5)
    np.testing.assert_array_equal(kept, x * 2 + 1)
    np.testing.assert_array_equal(view, (x * 2 + 1)[::2])
    np.testing.assert_array_equal(later, (x + 5) * 2 + 1)
    assert not np.shares_memory(kept, later) and not np.shares_memory(view, later)


def test_borrowed_shared_value_is_never_overwritten():
    w = sg.shared(np.zeros(1000, np.float32), "w")
    step = sg.compile([], [], updates=[(w, w + 1)], backend="llvm")
    step()
    borrowed = w._value  # the storage itself, as a caller holding it would see it
    for _ in range(3):
        step()
    np.testing.assert_array_equal(borrowed, np.ones(1000, np.float32))
    np.testing.assert_array_equal(w.get_value(), np.full(1000, 4, np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_streaming_elementwise_output(threads):
    n = STREAM_MIN_BYTES // 4 + 7  # odd tail; big enough for non-temporal stores
    x = sg.vector("x")
    f = sg.compile([x], sg.tanh(x) * 3 - x, backend="llvm", threads=threads)
    xv = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    want = np.tanh(xv) * 3 - xv
    for _ in range(2):  # the second call writes into the recycled first output
        got = f(xv)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        del got
    if platform.machine() in ("x86_64", "AMD64"):
        assert "vmovntp" in f.asm() or "movntp" in f.asm()
    small = sg.compile([x], sg.tanh(x) * 3 - x, backend="llvm")
    small(xv[:1000])
    assert "movnt" not in small.asm()


def test_loop_holding_the_previous_result_recycles():
    f = _double()
    x = np.arange(1000, dtype=np.float32)
    y = f(x)
    y = f(x)
    addresses = set()
    for k in range(6):  # ``y`` still holds the previous result during each call
        y = f(x + k)
        addresses.add(y.ctypes.data)
        np.testing.assert_array_equal(y, (x + k) * 2 + 1)
    assert len(addresses) <= 2
