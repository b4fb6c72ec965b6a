"""sg.distributed over real MPI processes: every test launches ``mpiexec -n 2`` on a small
script (with a timeout) and checks what the ranks wrote.  Skipped only when mpi4py (the
``[mpi]`` extra) is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("mpi4py")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")

PRELUDE = """
import os, sys
import numpy as np
import symgraph as sg
from symgraph import distributed as dist
dist.init()
R, N = dist.rank(), dist.size()
OUT = sys.argv[1]
def save(**arrays):
    np.savez(os.path.join(OUT, f"rank{R}.npz"), **arrays)
"""


def run_mpi(tmp_path, body: str, n: int = 2, timeout: float = 180, check: bool = True,
            cache: str = "off"):
    """Run PRELUDE + ``body`` on ``n`` MPI processes; returns (process, [rank outputs])."""
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               SYMGRAPH_CACHE_DIR=cache, OMP_NUM_THREADS="1", SYMGRAPH_THREADS="1",
               OPENBLAS_NUM_THREADS="1",
               # Open MPI refuses to run as root without these (MPICH ignores them)
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outs = []
    for r in range(n):
        path = tmp_path / f"rank{r}.npz"
        outs.append(dict(np.load(path)) if path.exists() else None)
    return proc, outs


def test_import_symgraph_does_not_import_mpi4py():
    code = "import sys, symgraph; symgraph.distributed; assert 'mpi4py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_rank_size_broadcast_and_metrics(tmp_path):
    _, outs = run_mpi(tmp_path, """
        w = sg.shared(np.full((3, 2), float(R), np.float32), "w")
        b = sg.shared(np.arange(4, dtype=np.int64) * (R + 1), "b")
        dist.broadcast([w, b])
        m = dist.reduce_metrics({"loss": 1.0 + R, "acc": 0.5 * R}, weight=1 + R)
        dist.barrier()
        save(rank=R, size=N, main=dist.is_main(), w=w.get_value(), b=b.get_value(),
             loss=m["loss"], acc=m["acc"], mx=dist.allreduce_value(np.array([R, -R]), "max"),
             mean=dist.allreduce_value(np.float32(R), "mean"))
    """)
    for r, o in enumerate(outs):
        assert int(o["rank"]) == r and int(o["size"]) == 2 and bool(o["main"]) == (r == 0)
        np.testing.assert_array_equal(o["w"], np.zeros((3, 2), np.float32))  # rank 0's values
        np.testing.assert_array_equal(o["b"], np.arange(4))
        # weights 1 and 2: (1*1 + 2*2) / 3 and (0*1 + 0.5*2) / 3
        assert o["loss"] == pytest.approx(5 / 3) and o["acc"] == pytest.approx(1 / 3)
        np.testing.assert_array_equal(o["mx"], [1, 0])
        assert float(o["mean"]) == pytest.approx(0.5)


ALLREDUCE = """
DTYPES = ["float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"]
SHAPES = [(), (5,), (3, 4), (2, 1, 3), (0, 3)]
results = {}
for backend in ["reference", "llvm"]:
    for dtype in DTYPES:
        for op in ["sum", "max", "min"]:
            xs = [sg.tensor(f"x{i}", s, dtype) for i, s in enumerate(SHAPES)]
            f = sg.compile(xs, dist.AllReduce(op)(*xs), backend=backend)
            rng = np.random.default_rng(R)  # different data on every rank
            vals = [(rng.integers(0, 2, s) if dtype == "bool" else rng.integers(-50, 50, s)).astype(dtype)
                    for s in SHAPES]
            for i, y in enumerate(f(*vals)):
                results[f"{backend}:{dtype}:{op}:{i}"] = y
            for i, v in enumerate(vals):
                results[f"in:{dtype}:{op}:{i}"] = v
    x = sg.tensor("x", (None, 3), "float32")
    g = sg.compile([x], dist.allreduce(x, "mean"), backend=backend)
    results[f"{backend}:mean"] = g(np.full((2, 3), R + 1.0, np.float32))
    # a transposed (non-contiguous) input is packed correctly
    m = sg.matrix("m")
    h = sg.compile([m], dist.allreduce(m.T, "sum"), backend=backend)
    results[f"{backend}:transposed"] = h(np.arange(6, dtype=np.float32).reshape(2, 3) * (R + 1))
save(**results)
"""


def test_allreduce_every_dtype_shape_and_op(tmp_path):
    _, outs = run_mpi(tmp_path, ALLREDUCE, timeout=400)
    reduce = {"sum": lambda a, b: a + b, "max": np.maximum, "min": np.minimum}
    for o in outs:
        for key in [k for k in o if k.startswith("in:")]:
            _, dtype, op, i = key.split(":")
            a, b = outs[0][key], outs[1][key]
            if dtype == "bool":
                want = (a | b) if op in ("sum", "max") else (a & b)
            else:
                want = reduce[op](a, b).astype(dtype)  # integer sums wrap, as in C
            for backend in ["reference", "llvm"]:
                got = o[f"{backend}:{dtype}:{op}:{i}"]
                assert got.dtype == np.dtype(dtype) and got.shape == a.shape, key
                np.testing.assert_array_equal(got, want, err_msg=f"{backend} {key}")
        for backend in ["reference", "llvm"]:
            np.testing.assert_array_equal(o[f"{backend}:mean"], np.full((2, 3), 1.5, np.float32))
            base = np.arange(6, dtype=np.float32).reshape(2, 3)
            np.testing.assert_array_equal(o[f"{backend}:transposed"], (base * 3).T)


EQUIVALENCE = """
MODEL, BACKEND = sys.argv[2], sys.argv[3]
B, STEPS = 16, 20
if BACKEND == "cuda":  # no GPU here: the stand-in device runs the generated CUDA C on the host
    import pytest
    from tests.gpu.fake_device import install
    install(pytest.MonkeyPatch())
BACKEND = "cuda" if BACKEND == "gpu" else BACKEND  # the real device

def build(distributed):
    rng = np.random.default_rng(1234)  # same start on both runs (broadcast checks it below)
    if MODEL == "mlp":
        x = sg.matrix("x")
        params = [sg.shared(rng.normal(0, 0.3, (12, 32)).astype("float32"), "W1"),
                  sg.shared(np.zeros(32, "float32"), "b1"),
                  sg.shared(rng.normal(0, 0.3, (32, 5)).astype("float32"), "W2"),
                  sg.shared(np.zeros(5, "float32"), "b2")]
        W1, b1, W2, b2 = params
        logits = sg.tanh(x @ W1 + b1) @ W2 + b2
    else:
        x = sg.tensor4("x")
        params = [sg.shared(rng.normal(0, 0.3, (4, 1, 3, 3)).astype("float32"), "conv_w"),
                  sg.shared(np.zeros((1, 4, 1, 1), "float32"), "conv_b"),
                  sg.shared(rng.normal(0, 0.3, (4 * 3 * 3, 5)).astype("float32"), "fc_w"),
                  sg.shared(np.zeros(5, "float32"), "fc_b")]
        cw, cb, fw, fb = params
        h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(x, cw, padding=1) + cb), 2)
        logits = sg.reshape(h, (-1, 4 * 3 * 3)) @ fw + fb
    t = sg.vector("t", "int64")
    loss = sg.nn.cross_entropy(logits, t)
    grads = sg.grad(loss, params)
    opt = sg.nn.adam(loss, params, lr=0.01, grads=grads)
    if distributed:
        dist.broadcast(params)
        opt = dist.data_parallel(opt, grads, params, bucket_bytes=600)  # several buckets
    return params, sg.compile([x, t], loss, updates=opt, backend=BACKEND)

data_rng = np.random.default_rng(7)
shape = (B * 5, 12) if MODEL == "mlp" else (B * 5, 1, 6, 6)
X = data_rng.normal(size=shape).astype("float32")
T = data_rng.integers(0, 5, B * 5)

single, step1 = build(False)
multi, stepN = build(True)
it1 = iter(())
itN = iter(())
trace = {}
for s in range(STEPS):
    try:
        xb, tb = next(it1)
        xs, ts = next(itN)
    except StopIteration:
        it1 = sg.nn.minibatches(X, T, batch_size=B, seed=s)
        itN = dist.shard(X, T, batch_size=B, seed=s)
        xb, tb = next(it1)
        xs, ts = next(itN)
    assert len(xs) == B // N
    l1 = step1(xb, tb)
    lN = stepN(xs, ts)
    trace[f"loss1_{s}"] = l1
    trace[f"lossN_{s}"] = dist.allreduce_value(lN, "mean")
    for p1, pN in zip(single, multi):
        trace[f"{p1.name}_1_{s}"] = p1.get_value()
        trace[f"{p1.name}_N_{s}"] = pN.get_value()
save(**trace)
"""


def _skip_without(backend: str) -> None:
    if backend == "cuda":
        from tests.gpu.host_emulation import CXX
        if CXX is None:
            pytest.skip("no host C++ compiler for the stand-in cuda device")
    if backend == "gpu":
        from symgraph.backends.cuda_runtime import gpu_available
        if not gpu_available():
            pytest.skip("needs pycuda, the NVIDIA driver and a GPU")


@pytest.mark.slow
@pytest.mark.parametrize("model,backend", [
    ("mlp", "llvm"), ("mlp", "reference"), ("convnet", "llvm"), ("convnet", "reference"),
    ("mlp", "cuda"), ("convnet", "cuda"),
    pytest.param("mlp", "gpu", marks=pytest.mark.gpu), pytest.param("convnet", "gpu", marks=pytest.mark.gpu)])
def test_two_processes_match_one_process_with_adam(tmp_path, model, backend):
    """20 Adam steps on 2 processes with batches of B/2 give the parameters of 1 process with
    batches of B, step after step (cuda: on the stand-in device, gpu: on the real one, both
    ranks sharing it; reductions through the host)."""
    _skip_without(backend)
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + EQUIVALENCE)
    env = dict(os.environ, PYTHONPATH=ROOT, SYMGRAPH_CACHE_DIR="off", OMP_NUM_THREADS="1",
               SYMGRAPH_THREADS="1", OPENBLAS_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), str(tmp_path), model, backend],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outs = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    names = sorted({k.split("_1_")[0] for k in outs[0] if "_1_" in k and not k.startswith("loss")})
    assert len(names) == 4
    moved = 0.0
    for s in range(20):
        assert float(outs[0][f"lossN_{s}"]) == pytest.approx(float(outs[0][f"loss1_{s}"]), rel=1e-4, abs=1e-5)
        for name in names:
            one = outs[0][f"{name}_1_{s}"]
            for o in outs:  # both ranks hold the same parameters, equal to the single run's
                np.testing.assert_allclose(o[f"{name}_N_{s}"], one, rtol=2e-4, atol=2e-5,
                                           err_msg=f"{name} at step {s}")
            moved = max(moved, float(np.abs(one - outs[0][f"{name}_1_0"]).max()))
    assert moved > 0.05  # the parameters did change over the 20 steps


def test_a_rank_raising_mid_training_ends_the_job(tmp_path):
    start = time.monotonic()
    proc, _ = run_mpi(tmp_path, """
        w = sg.shared(np.ones(4, np.float32), "w")
        x = sg.vector("x")
        loss = sg.sum(sg.square(x * w))
        (g,) = sg.grad(loss, [w])
        step = sg.compile([x], loss, updates=dist.data_parallel([(w, w - 0.1 * g)], [g], [w]),
                          backend="llvm")
        for i in range(1000):
            if R == 1 and i == 3:
                raise RuntimeError("rank 1 fails at step 3")
            step(np.ones(4, np.float32))
    """, timeout=120, check=False)
    assert proc.returncode != 0
    assert "rank 1 fails at step 3" in proc.stderr + proc.stdout
    assert "aborting all ranks" in proc.stderr + proc.stdout
    assert time.monotonic() - start < 100  # bounded: not the 120 s timeout


def test_watchdog_aborts_a_rank_left_waiting(tmp_path):
    proc, _ = run_mpi(tmp_path, """
        import time
        dist.init(timeout=3)
        if R == 1:
            time.sleep(60)  # never joins the barrier, and never raises
        dist.barrier()
    """, timeout=100, check=False)
    assert proc.returncode != 0
    assert "watchdog: no progress" in proc.stderr + proc.stdout


def test_mismatched_parameters_are_named(tmp_path):
    _, outs = run_mpi(tmp_path, """
        w = sg.shared(np.ones((3, 4 + R), np.float32), "dense_w")
        b = sg.shared(np.ones(3, np.float32), "dense_b")
        x = sg.matrix("x")
        loss = sg.sum(x @ w) + sg.sum(b)
        grads = sg.grad(loss, [b, w])
        try:
            dist.reduce_gradients(grads, [b, w])
            message = ""
        except ValueError as e:
            message = str(e)
        save(message=message)
    """)
    for o in outs:
        msg = str(o["message"])
        assert "'dense_w'" in msg and "rank 1" in msg and "[3, 5]" in msg and "[3, 4]" in msg


def test_checkpoint_saved_by_the_main_rank_only(tmp_path):
    _, outs = run_mpi(tmp_path, """
        w = sg.shared(np.full(3, R + 1.0, np.float32), "w")
        path = os.path.join(OUT, "ckpt.npz")
        dist.save_checkpoint(path, [w], epoch=4)
        w.set_value(np.zeros(3, np.float32))
        extra = dist.load_checkpoint(path, [w])
        save(w=w.get_value(), epoch=extra["epoch"])
    """)
    for o in outs:
        np.testing.assert_array_equal(o["w"], np.ones(3, np.float32))  # rank 0's value
        assert int(o["epoch"]) == 4


def test_shard_covers_each_global_batch(tmp_path):
    _, outs = run_mpi(tmp_path, """
        X = np.arange(22)
        parts = [x for (x,) in dist.shard(X, batch_size=6, seed=3)]
        save(parts=np.concatenate(parts), lens=np.array([len(p) for p in parts]))
    """)
    want = np.concatenate([b for (b,) in __import__("symgraph").nn.minibatches(np.arange(22), batch_size=6,
                                                                               seed=3)])
    lens = [o["lens"] for o in outs]
    np.testing.assert_array_equal(lens[0], [3, 3, 3, 2])  # the last batch of 4 split 2 + 2
    # interleaving the ranks' parts batch by batch gives the single-process epoch
    got, starts = [], [0, 0]
    for k in range(4):
        for r in range(2):
            n = int(lens[r][k])
            got.append(outs[r]["parts"][starts[r]:starts[r] + n])
            starts[r] += n
    np.testing.assert_array_equal(np.concatenate(got), want)


# three layers, one parameter per bucket: the kernels' names and IR of the compiled step
THREE_BUCKETS = """
    rng = np.random.default_rng(0)
    x = sg.matrix("x")
    params = [sg.shared(rng.normal(size=(8, 8)).astype("float32"), f"W{i}") for i in range(3)]
    h = x
    for W in params:
        h = sg.tanh(h @ W)
    loss = sg.sum(h)
    grads = sg.grad(loss, params)
    upd = dist.data_parallel([(p, p - 0.1 * g) for p, g in zip(params, grads)], grads, params,
                             bucket_bytes=256)
    f = sg.compile([x], loss, updates=upd, backend="llvm")
    f(np.ones((4, 8), np.float32))
    save(names=np.array([k.name for k in f.kernels]), ir=np.array([k.ir for k in f.kernels]))
"""


def test_buckets_start_in_backward_order_and_are_consumed_in_start_order(tmp_path):
    """With several buckets, each reduction starts during the backward pass, right after the
    gradient it holds (in a chain of layers: two matrix products, the input gradient and the
    weight gradient of the next layer down, between consecutive starts), all before the first
    wait; the updates read the buckets in the order they started, so the first reduction is
    consumed while the later ones are still in flight."""
    _, outs = run_mpi(tmp_path, THREE_BUCKETS)
    names, ir = [str(n) for n in outs[0]["names"]], [str(t) for t in outs[0]["ir"]]
    starts = [i for i, n in enumerate(names) if n.startswith("mpi_allreduce_start")]
    waits = [i for i, n in enumerate(names) if n.startswith("mpi_allreduce_wait")]
    gemms = [i for i, n in enumerate(names) if n.startswith(("matmul", "gemm"))]
    assert len(starts) == len(waits) == 3 and len(gemms) == 3 + 5  # forward, backward
    between = [sum(a < g < b for g in gemms) for a, b in zip(starts, starts[1:])]
    assert between == [2, 2] and not any(g > starts[-1] for g in gemms)
    assert max(starts) < min(waits)  # every reduction is in flight before the first wait
    started = [request_of(ir[i]) for i in starts]
    assert len(set(started)) == 3
    assert [request_of(ir[i]) for i in waits] == started  # consumed in start order
    # the first bucket's update runs before the second bucket's wait
    updates = [i for i, n in enumerate(names) if i > waits[0] and "mpi_" not in n]
    assert updates and updates[0] < waits[1]


def request_of(ir_text: str) -> str:
    """The request storage a collective kernel's IR names (``request=s12[0]``)."""
    return ir_text.split("request=")[1].split("[")[0]


def test_reductions_progress_after_every_kernel_while_in_flight(tmp_path):
    """MPICH moves a non-blocking collective's data only inside MPI calls: between a start and
    its wait, every other kernel is followed by an MPI_Test of the latest reduction in flight
    (testing an unfinished request progresses them all)."""
    _, outs = run_mpi(tmp_path, THREE_BUCKETS)
    names, ir = [str(n) for n in outs[0]["names"]], [str(t) for t in outs[0]["ir"]]
    in_flight: list[str] = []
    tested = 0
    for i, (name, text) in enumerate(zip(names, ir)):
        if name.startswith("mpi_allreduce_start"):
            in_flight.append(request_of(text))
        elif name.startswith("mpi_allreduce_wait"):
            in_flight.remove(request_of(text))
        elif not name.startswith("mpi_progress") and in_flight:
            follow = [line for line in ir[i + 1].splitlines() if "mpi_test" in line]
            assert names[i + 1].startswith("mpi_progress"), (name, names[i + 1])
            assert [request_of(line) for line in follow] == in_flight[-1:]
            tested += 1
    assert tested >= 4


def test_gradients_are_written_into_the_bucket_and_reduced_in_place(tmp_path):
    """The llvm step has each gradient's producer write it straight into its bucket, which is
    reduced in place (one buffer, MPI_IN_PLACE): no packing copy, except for a gradient that
    is also an output of the step (its own value must survive the reduction).  The updates
    equal NumPy's (float64) and the reference backend's."""
    _, outs = run_mpi(tmp_path, """
        rng = np.random.default_rng(5)
        W0 = rng.normal(size=(6, 4)).astype("float32")
        b0 = rng.normal(size=4).astype("float32")
        X = rng.normal(size=(3 * N, 6)).astype("float32")
        x = sg.tensor("x", (3, 6))  # static shapes: gW is the product's own output
        W, b = sg.shared(W0, "W"), sg.shared(b0, "b")
        loss = sg.sum(sg.tanh(x @ W + b) ** 2)
        gW, gb = sg.grad(loss, [W, b])
        res = {}
        for backend in ["llvm", "reference"]:
            W.set_value(W0)
            b.set_value(b0)
            upd = dist.data_parallel([(W, W - 0.1 * gW), (b, b - 0.1 * gb)], [gW, gb], [W, b])
            f = sg.compile([x], [loss, gb], updates=upd, backend=backend)  # gb is also an output
            _, gb_out = f(X[3 * R:3 * (R + 1)])
            res.update({f"{backend}_W": W.get_value(), f"{backend}_b": b.get_value(),
                        f"{backend}_gb": gb_out})
            if backend == "llvm":
                res["ops"] = np.array([" ".join(k.ops) for k in f.kernels])
                res["names"] = np.array([k.name for k in f.kernels])
                res["ir"] = np.array([k.ir for k in f.kernels])
        save(X=X, W0=W0, b0=b0, **res)
    """)
    o = outs[0]
    X, W0, b0 = (o[k].astype(np.float64) for k in ("X", "W0", "b0"))
    gWs, gbs = [], []
    for r in range(2):
        xr = X[3 * r:3 * (r + 1)]
        t = np.tanh(xr @ W0 + b0)
        dz = 2 * t * (1 - t * t)
        gWs.append(xr.T @ dz)
        gbs.append(dz.sum(0))
    for r, out in enumerate(outs):
        for backend in ["llvm", "reference"]:
            np.testing.assert_allclose(out[f"{backend}_W"], W0 - 0.1 * np.mean(gWs, 0), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(out[f"{backend}_b"], b0 - 0.1 * np.mean(gbs, 0), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(out[f"{backend}_gb"], gbs[r], rtol=1e-5, atol=1e-5)  # not reduced
    names, ops, ir = ([str(v) for v in o[k]] for k in ("names", "ops", "ir"))
    packs = [n for n, op in zip(names, ops) if n.startswith("copy") and "AllReduce" in op]
    assert len(packs) == 1  # gb's; gW was computed into the bucket
    (start,) = [t for n, t in zip(names, ir) if n.startswith("mpi_allreduce_start")]
    send, recv = start.split("send=")[1].split(",")[0], start.split("recv=")[1].split(",")[0]
    assert send == recv  # MPI_IN_PLACE


def test_distributed_example_trains(tmp_path):
    pytest.importorskip("sklearn")
    env = dict(os.environ, PYTHONPATH=ROOT, SYMGRAPH_CACHE_DIR="off", OMP_NUM_THREADS="1",
               SYMGRAPH_THREADS="1", OPENBLAS_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    ckpt = tmp_path / "mlp.npz"
    example = os.path.join(ROOT, "examples", "distributed_mlp.py")
    cmd = [MPIEXEC, "-n", "2", sys.executable, example, "--epochs", "5", "--checkpoint", str(ckpt)]
    proc = subprocess.run(cmd,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "test accuracy" in line]
    assert len(lines) == 1  # printed by rank 0 only
    assert float(lines[0].split()[-1]) > 0.8
    assert "trained on 2 processes" in proc.stdout and ckpt.exists()


@pytest.mark.parametrize("mode", [[], ["--separate"]], ids=["interleaved", "separate"])
def test_benchmark_script_runs(tmp_path, mode):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "distributed_w2.py"),
                           "--steps", "1", "--batch", "16", "--rounds", "2", *mode],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, SYMGRAPH_CACHE_DIR="off"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "throughput ratio (2 processes / 1)" in proc.stdout
    assert proc.stdout.count("x |") == 2  # one ratio per round


def test_cuda_allreduce_runs_through_the_host(tmp_path):
    """On the cuda backend an all-reduce's start, progress tests and wait are host steps of the
    runtime (mode "mpi"), shown in the module as comments; every dtype and op reduces as the
    reference backend does (stand-in device), and the step cannot be exported."""
    _skip_without("cuda")
    _, outs = run_mpi(tmp_path, """
        import pytest
        from tests.gpu.fake_device import install
        install(pytest.MonkeyPatch())
        got = {}
        for dtype, op in [("float32", "mean"), ("float64", "sum"), ("int32", "max"), ("int64", "min")]:
            x = sg.vector("x", dtype)
            y = dist.allreduce(sg.exp(x) if dtype.startswith("float") else x * 2, op)
            f = sg.compile([x], y * 3 if dtype.startswith("float") else y, backend="cuda")
            v = (np.arange(7) * (R + 1) - 3).astype(dtype)
            got[f"{dtype}_{op}"] = f(v)
            steps = [k for k in f.kernels if k.name.startswith("mpi_allreduce_")]
            assert len(steps) == 2 and all(k.mode == "mpi" for k in steps), f.kernels
            assert "MPI calls issued by the runtime" in f.source()
        try:
            f.export(os.path.join(OUT, f"lib{R}"))
            message = ""
        except sg.CompileError as e:
            message = str(e)
        save(message=message, **got)
    """)
    v = [(np.arange(7) * (r + 1) - 3) for r in range(2)]
    for o in outs:
        np.testing.assert_allclose(o["float32_mean"], 3 * (np.exp(v[0]) + np.exp(v[1])) / 2, rtol=1e-6)
        np.testing.assert_allclose(o["float64_sum"], 3 * (np.exp(v[0]) + np.exp(v[1])), rtol=1e-12)
        np.testing.assert_array_equal(o["int32_max"], np.maximum(2 * v[0], 2 * v[1]))
        np.testing.assert_array_equal(o["int64_min"], np.minimum(2 * v[0], 2 * v[1]))
        assert "cannot be exported" in str(o["message"])


def test_exporting_a_step_with_an_allreduce_is_refused(tmp_path):
    _, outs = run_mpi(tmp_path, """
        w = sg.shared(np.ones(3, np.float32), "w")
        x = sg.vector("x")
        g = sg.grad(sg.sum(x * w), w)
        f = sg.compile([x], [], updates=dist.data_parallel([(w, w - g)], [g], [w]))
        try:
            f.export(os.path.join(OUT, f"lib{R}"))
            message = ""
        except sg.CompileError as e:
            message = str(e)
        save(message=message, written=np.array(os.path.exists(os.path.join(OUT, f"lib{R}.h"))))
    """)
    for o in outs:
        assert "cannot be exported" in str(o["message"]) and not o["written"]


def test_cached_steps_are_shared_between_ranks_and_job_sizes(tmp_path):
    """Compiled code from the disk cache (keyed by the graph, not the rank or the job size)
    still reduces over the whole job."""
    body = """
        x = sg.vector("x")
        f = sg.compile([x], dist.allreduce(x, "sum"), backend="llvm")
        save(y=f(np.full(3, R + 1.0, np.float32)))
    """
    cache = str(tmp_path / "cache")
    for n, want in [(2, 3.0), (2, 3.0), (1, 1.0), (2, 3.0)]:
        _, outs = run_mpi(tmp_path, body, n=n, timeout=60, cache=cache)
        for o in outs:
            np.testing.assert_array_equal(o["y"], np.full(3, want, np.float32))


def test_without_mpi4py_the_error_says_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import symgraph as sg\n"
            "try:\n    sg.distributed.init()\nexcept ImportError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "pip install 'symgraph[mpi]'" in proc.stdout, proc.stdout + proc.stderr


def test_a_rank_killed_mid_training_ends_the_job(tmp_path):
    start = time.monotonic()
    proc, _ = run_mpi(tmp_path, """
        import signal
        w = sg.shared(np.ones(4, np.float32), "w")
        x = sg.vector("x")
        loss = sg.sum(sg.square(x * w))
        (g,) = sg.grad(loss, [w])
        step = sg.compile([x], loss, updates=dist.data_parallel([(w, w - 0.1 * g)], [g], [w]),
                          backend="llvm")
        for i in range(10**6):
            if R == 1 and i == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # no Python exception, no excepthook
            step(np.ones(4, np.float32))
    """, timeout=120, check=False)
    assert proc.returncode != 0
    assert time.monotonic() - start < 100  # mpiexec ended rank 0, stuck in the all-reduce


def test_buckets_group_one_dtype_from_the_last_gradient():
    import symgraph as sg
    from symgraph import distributed as dist
    grads = [sg.tensor("a", (100,)), sg.tensor("b", (10,), "float64"), sg.tensor("c", (100,)),
             sg.tensor("d", (300,)), sg.tensor("e", (5,), "float64")]
    # 400-byte float32 values, a 1000-byte budget: d (1200 B) alone, then c + a; float64 apart
    assert dist._buckets(grads, 1000) == [[4, 1], [3], [2, 0]]
    assert dist._buckets(grads, 10**9) == [[4, 1], [3, 2, 0]]
