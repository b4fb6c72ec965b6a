"""f.export / sg.export_library: self-contained C libraries (targets, no BLAS / RUNPATH,
contexts across threads, metadata, checked API), built and called from C programs."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import llvm_jit

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="export builds with gcc")


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def build_c(tmp: Path, src: str, lib: str, *extra: str) -> Path:
    """Compile ``src`` against ``tmp/<lib>.so``; the executable."""
    (tmp / "main.c").write_text(textwrap.dedent(src))
    exe = tmp / "main"
    subprocess.run(["gcc", "-O1", "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(tmp / "main.c"),
                    f"-I{tmp}", str(tmp / f"{lib}.so"), f"-Wl,-rpath,{tmp}", *extra],
                   check=True, cwd=tmp)
    return exe


def run_c(exe: Path, *args, prefix=()) -> str:
    return subprocess.run([*prefix, str(exe), *map(str, args)], capture_output=True, text=True,
                          check=True).stdout


def mlp(batch=4, seed=0):
    """A two-layer MLP (matmuls big enough for BLAS in the JIT path) with an SGD step."""
    x = sg.tensor("x", (batch, 64))
    t = sg.tensor("target", (batch, 8))
    w1 = sg.shared(rand((64, 96), seed) * 0.1, "w1")
    w2 = sg.shared(rand((96, 8), seed + 1) * 0.1, "w2")
    h = sg.tanh(x @ w1)
    y = h @ w2
    y.name = "y"
    loss = ((y - t) ** 2).mean()
    loss.name = "loss"
    g1, g2 = sg.grad(loss, [w1, w2])
    train = sg.compile([x, t], loss, updates=[(w1, w1 - 0.1 * g1), (w2, w2 - 0.1 * g2)])
    predict = sg.compile([x], y)
    return train, predict, (w1, w2)


# --- 1. targets -----------------------------------------------------------------------------
def test_default_target_is_x86_64_v3_without_avx512(tmp_path):
    _, predict, _ = mlp()
    paths = predict.export(str(tmp_path / "m"), kind="object")
    asm = subprocess.run(["objdump", "-d", paths["object"]], capture_output=True, text=True,
                         check=True).stdout
    assert "ymm" in asm  # AVX2 is used ...
    assert "zmm" not in asm and not re.search(r"\{k[1-7]\}", asm)  # ... AVX-512 never
    header = Path(paths["header"]).read_text()
    assert '#define M_TARGET "x86-64-v3"' in header and "avx2" in header


def test_v4_and_baseline_targets(tmp_path):
    _, predict, _ = mlp()
    base = predict.export(str(tmp_path / "base"), kind="object", target="x86-64")
    asm = subprocess.run(["objdump", "-d", base["object"]], capture_output=True, text=True).stdout
    assert "ymm" not in asm and "zmm" not in asm
    v4 = predict.export(str(tmp_path / "v4"), kind="object", target="x86-64-v4")
    asm = subprocess.run(["objdump", "-d", v4["object"]], capture_output=True, text=True).stdout
    assert "avx512f" in Path(v4["header"]).read_text()
    assert "zmm" in asm or "ymm" in asm


def test_host_target_runs_and_named_cpu_is_accepted(tmp_path):
    _, predict, _ = mlp()
    xv = rand((4, 64), 5)
    paths = predict.export(str(tmp_path / "hostlib"), target="host")
    lib = ctypes.CDLL(paths["library"])
    ctx = ctypes.c_void_p()
    assert lib.hostlib_create(ctypes.byref(ctx)) == 0
    out = np.zeros((4, 8), np.float32)
    assert lib.hostlib_run(ctx, xv.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p)) == 0
    np.testing.assert_allclose(out, predict(xv), rtol=1e-5, atol=1e-6)
    lib.hostlib_destroy(ctx)
    haswell = predict.export(str(tmp_path / "hsw"), kind="object", target="haswell")
    assert '"haswell"' in Path(haswell["header"]).read_text()


@pytest.mark.parametrize("bad", ["x86-64-v9", "pentium9000", {"cpu": "nope"}, {"features": "avx2"}, 3])
def test_invalid_target_is_a_clear_value_error(tmp_path, bad):
    _, predict, _ = mlp()
    with pytest.raises(ValueError, match="target|cpu|feature"):
        predict.export(str(tmp_path / "m"), target=bad)


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-user (apt-get install qemu-user)")
def test_default_export_runs_on_haswell_and_v4_refuses_cleanly(tmp_path):
    """Under qemu emulating a Haswell (AVX2, no AVX-512), the default export runs and gives
    the Python results; a v4 export's create returns ERR_CPU instead of dying of SIGILL."""
    _, predict, _ = mlp()
    xv = rand((4, 64), 3)
    (tmp_path / "x.bin").write_bytes(xv.tobytes())
    src = """
        #include <stdio.h>
        #include "LIB.h"
        int main(int argc, char **argv) {
            float x[PFX_X_SIZE], y[PFX_Y_SIZE];
            FILE *fh = fopen(argv[1], "rb");
            if (fread(x, sizeof x, 1, fh) != 1) return 3;
            fclose(fh);
            LIB_ctx *ctx;
            int32_t st = LIB_create(&ctx);
            if (st != 0) { printf("create %d %s\\n", st, LIB_cpu_missing()); return 0; }
            if (LIB_run(ctx, x, y) != 0) return 4;
            for (int i = 0; i < PFX_Y_SIZE; i++) printf("%.9g\\n", y[i]);
            LIB_destroy(ctx);
            return 0;
        }
    """
    for lib, target in (("v3", "x86-64-v3"), ("v4", "x86-64-v4")):
        d = tmp_path / lib
        d.mkdir()
        predict.export(str(d / lib), target=target)
        exe = build_c(d, src.replace("LIB", lib).replace("PFX", lib.upper()), lib)
        out = run_c(exe, tmp_path / "x.bin", prefix=("qemu-x86_64", "-cpu", "Haswell"))
        if lib == "v3":
            np.testing.assert_allclose(np.array(out.split(), np.float32).reshape(4, 8), predict(xv),
                                       rtol=1e-5, atol=1e-6)
        else:
            assert out.startswith("create 4 avx512"), out


# --- 2. self-contained ----------------------------------------------------------------------
def test_default_artefact_needs_only_libc_and_libm(tmp_path):
    train, predict, _ = mlp()
    paths = train.export(str(tmp_path / "mlp"))
    dyn = subprocess.run(["readelf", "-d", paths["library"]], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dyn)
    assert set(needed) <= {"libc.so.6", "libm.so.6"}, needed
    assert "RPATH" not in dyn and "RUNPATH" not in dyn
    assert "Library soname: [mlp.so]" in dyn
    undefined = subprocess.run(["nm", "-D", "--undefined-only", paths["library"]], capture_output=True,
                               text=True, check=True).stdout
    assert "openblas" not in undefined.lower() and "gemm" not in undefined
    exported = subprocess.run(["nm", "-D", "--defined-only", paths["library"]], capture_output=True,
                              text=True, check=True).stdout.split()[2::3]
    assert exported and all(s.startswith("mlp_") for s in exported), exported


MINIMAL_SRC = """
    #include <stdio.h>
    #include "mlp.h"
    int main(int argc, char **argv) {
        static float x[MLP_X_SIZE], y[MLP_Y_SIZE];
        FILE *fh = argc > 1 ? fopen(argv[1], "rb") : NULL;
        if (fh == NULL || fread(x, sizeof x, 1, fh) != 1) return 3;
        fclose(fh);
        mlp_ctx *ctx;
        if (mlp_create(&ctx) != MLP_OK || mlp_run(ctx, x, y) != MLP_OK) return 4;
        for (int i = 0; i < MLP_Y_SIZE; i++) printf("%.9g\\n", y[i]);
        mlp_destroy(ctx);
        return 0;
    }
"""


def minimal_root(tmp: Path, exe: Path, files: list[Path]) -> Path:
    """A root holding only ``exe`` and ``files`` (in /app) and the libraries ``ldd`` lists for
    ``exe`` (in /lib, the dynamic loader at the path the program asks for); nothing else."""
    root = tmp / "root"
    (root / "app").mkdir(parents=True)
    (root / "lib").mkdir()
    for f in [exe, *files]:
        shutil.copy2(f, root / "app" / f.name)
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        m = re.search(r"(?:=> )?(/\S+) \(0x", line)
        if m and Path(m.group(1)).parent != exe.parent:  # the library itself is in /app already
            shutil.copy2(m.group(1), root / "lib" / Path(m.group(1)).name)
    interp = re.search(r"program interpreter: (\S+)\]", subprocess.run(
        ["readelf", "-l", str(exe)], capture_output=True, text=True, check=True).stdout).group(1)
    (root / interp.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "lib" / Path(interp).name, root / interp.lstrip("/"))
    return root


def _chroot() -> list[str] | None:
    """How to chroot here: as root, in a user namespace, or not at all."""
    if shutil.which("chroot") is None:
        return None
    if os.geteuid() == 0:
        return [shutil.which("chroot")]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-r", "true"], capture_output=True).returncode == 0:
        return [unshare, "-r", shutil.which("chroot")]
    return None


@pytest.mark.parametrize("threads", [1, 2])
def test_runs_in_a_root_without_python_or_numpy(tmp_path, threads):
    """docs/deployment.md, "Checking that it is self-contained": the program and the library
    run with an empty environment on a root that holds only them and what ldd lists, through
    that root's dynamic loader (and, where possible, chrooted into it), and agree with Python."""
    if threads > 1 and llvm_jit.libraries()["gomp"] is None:
        pytest.skip("threads > 1 needs libgomp")
    batch = 16 if threads == 1 else 1024  # big enough for parallel loops (and libgomp)
    _, predict, _ = mlp(batch=batch)
    xv = rand((batch, 64), 7)
    paths = predict.export(str(tmp_path / "mlp"), threads=threads)
    dyn = subprocess.run(["readelf", "-d", paths["library"]], capture_output=True, text=True).stdout
    assert "RPATH" not in dyn and "RUNPATH" not in dyn
    needed = set(re.findall(r"\(NEEDED\).*\[(.*)\]", dyn))
    assert needed <= {"libc.so.6", "libm.so.6", "libgomp.so.1"}
    assert ("libgomp.so.1" in needed) == (threads > 1)
    (tmp_path / "main.c").write_text(textwrap.dedent(MINIMAL_SRC))
    exe = tmp_path / "main"
    subprocess.run(["gcc", "-O1", "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(tmp_path / "main.c"),
                    f"-I{tmp_path}", paths["library"], "-Wl,-rpath,$ORIGIN"], check=True)
    (tmp_path / "x.bin").write_bytes(xv.tobytes())
    root = minimal_root(tmp_path, exe, [Path(paths["library"]), tmp_path / "x.bin"])
    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert not [p for p in listing if re.search(r"python|numpy|openblas", p, re.I)], listing
    assert {p.split("/")[0] for p in listing} == {"app", "lib", "lib64"}
    want = predict(xv)
    loader = [str(root / "lib" / "ld-linux-x86-64.so.2"), "--inhibit-cache", "--library-path",
              f"{root / 'app'}:{root / 'lib'}", str(root / "app" / "main")]
    # the root's loader would fall back to the system's folders: check that it never does
    trace = subprocess.run(["env", "-i", "LD_TRACE_LOADED_OBJECTS=1", *loader], capture_output=True,
                           text=True, check=True).stdout
    loaded = re.findall(r"=> (/\S+)", trace)
    assert loaded and all(p.startswith(str(root) + "/") for p in loaded), trace
    runs = {"loader": ["env", "-i", *loader, str(root / "app" / "x.bin")]}
    chroot = _chroot()
    if chroot is not None:
        # no /proc in the root: $ORIGIN cannot be resolved there, so name the folders
        runs["chroot"] = ["env", "-i", "LD_LIBRARY_PATH=/app:/lib", *chroot, str(root), "/app/main",
                          "/app/x.bin"]
    for how, cmd in runs.items():
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, (how, out.stderr)
        np.testing.assert_allclose(np.array(out.stdout.split(), np.float32).reshape(want.shape), want,
                                   rtol=1e-5, atol=1e-6, err_msg=how)


def test_threads_option_links_libgomp_only_when_asked(tmp_path):
    x = sg.tensor("x", (512, 256))
    f = sg.compile([x], sg.tanh(x) * 2)
    xv = rand((512, 256))
    for threads, gomp in ((1, False), (2, True)):
        paths = f.export(str(tmp_path / f"par{threads}"), threads=threads)
        dyn = subprocess.run(["readelf", "-d", paths["library"]], capture_output=True, text=True).stdout
        assert ("libgomp" in dyn) == gomp
        lib = ctypes.CDLL(paths["library"])
        ctx, out = ctypes.c_void_p(), np.zeros_like(xv)
        create, run = getattr(lib, f"par{threads}_create"), getattr(lib, f"par{threads}_run")
        assert create(ctypes.byref(ctx)) == 0
        assert run(ctx, xv.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p)) == 0
        np.testing.assert_allclose(out, f(xv), rtol=1e-6, atol=1e-7)
        getattr(lib, f"par{threads}_destroy")(ctx)
    with pytest.raises(ValueError, match="threads"):
        f.export(str(tmp_path / "bad"), threads=0)


# --- 3. contexts ----------------------------------------------------------------------------
THREADS_SRC = """
    #include <pthread.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <math.h>
    #include "mlp.h"
    static float X[8][MLP_X_SIZE], WANT[8][MLP_Y_SIZE];
    static int wrong[8];
    static void *work(void *arg) {
        int t = (int)(long)arg;
        mlp_ctx *ctx;
        if (mlp_create(&ctx) != MLP_OK) { wrong[t] = -1; return NULL; }
        float y[MLP_Y_SIZE];
        for (int it = 0; it < ITERS; it++) {
            if (mlp_run(ctx, X[t], y) != MLP_OK) { wrong[t]++; continue; }
            for (int i = 0; i < MLP_Y_SIZE; i++)
                if (fabsf(y[i] - WANT[t][i]) > 1e-5f * (1.0f + fabsf(WANT[t][i]))) { wrong[t]++; break; }
        }
        mlp_destroy(ctx);
        return NULL;
    }
    int main(int argc, char **argv) {
        FILE *fh = fopen(argv[1], "rb");
        if (fread(X, sizeof X, 1, fh) != 1 || fread(WANT, sizeof WANT, 1, fh) != 1) return 3;
        fclose(fh);
        pthread_t th[8];
        for (long t = 0; t < 8; t++) pthread_create(&th[t], NULL, work, (void *)t);
        int total = 0;
        for (int t = 0; t < 8; t++) { pthread_join(th[t], NULL); total += wrong[t]; }
        printf("%d\\n", total);
        return 0;
    }
"""


def test_eight_threads_on_separate_contexts_give_no_wrong_result(tmp_path):
    _, predict, _ = mlp(batch=16)
    xs = [rand((16, 64), 10 + t) for t in range(8)]
    want = [predict(x) for x in xs]
    data = b"".join(x.tobytes() for x in xs) + b"".join(w.tobytes() for w in want)
    (tmp_path / "data.bin").write_bytes(data)
    predict.export(str(tmp_path / "mlp"))
    exe = build_c(tmp_path, THREADS_SRC, "mlp", "-DITERS=300", "-lpthread", "-lm")
    assert run_c(exe, tmp_path / "data.bin").strip() == "0"
    if shutil.which("valgrind"):  # and no data race between the contexts (helgrind)
        exe = build_c(tmp_path, THREADS_SRC, "mlp", "-DITERS=2", "-lpthread", "-lm")
        out = run_c(exe, tmp_path / "data.bin", prefix=("valgrind", "--tool=helgrind", "-q",
                                                        "--error-exitcode=9"))
        assert out.strip() == "0"


def test_two_contexts_with_different_weights_and_training_updates(tmp_path):
    train, predict, (w1, w2) = mlp()
    xv, tv = rand((4, 64), 1), rand((4, 8), 2)
    before = [w.get_value().copy() for w in (w1, w2)]
    train.export(str(tmp_path / "mlp"))
    lib = ctypes.CDLL(str(tmp_path / "mlp.so"))
    a, b = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.mlp_create(ctypes.byref(a)) == 0 and lib.mlp_create(ctypes.byref(b)) == 0
    ptr = lambda arr: arr.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    zeros = np.zeros((96, 8), np.float32)
    assert lib.mlp_set_w2(b, ptr(zeros), ctypes.c_int64(zeros.size)) == 0
    loss = np.zeros((), np.float32)
    want = [float(train(xv, tv)) for _ in range(3)]
    for step in range(3):
        assert lib.mlp_run(a, ptr(xv), ptr(tv), ptr(loss)) == 0
        np.testing.assert_allclose(loss, want[step], rtol=1e-5)
    got = np.zeros((64, 96), np.float32)
    assert lib.mlp_get_w1(a, ptr(got), ctypes.c_int64(got.size)) == 0
    np.testing.assert_allclose(got, w1.get_value(), rtol=1e-5, atol=1e-6)
    assert lib.mlp_run(b, ptr(xv), ptr(tv), ptr(loss)) == 0  # context b: w2 = 0, fresh w1
    np.testing.assert_allclose(loss, float((tv.astype(np.float64) ** 2).mean()), rtol=1e-5)
    assert lib.mlp_get_w1(b, ptr(got), ctypes.c_int64(got.size)) == 0
    np.testing.assert_array_equal(got, before[0])  # a zero w2 gives w1 a zero gradient
    lib.mlp_destroy(a)
    lib.mlp_destroy(b)


def test_export_library_shares_parameters_between_train_and_predict(tmp_path):
    train, predict, (w1, w2) = mlp()
    xv, tv = rand((4, 64), 1), rand((4, 8), 2)
    paths = sg.export_library(str(tmp_path / "net"), {"train": train, "predict": predict})
    header = Path(paths["header"]).read_text()
    assert "int32_t net_train_run(net_ctx *ctx, const float *x, const float *target, float *loss);" in header
    assert "int32_t net_predict_run(net_ctx *ctx, const float *x, float *y);" in header
    lib = ctypes.CDLL(paths["library"])
    ctx = ctypes.c_void_p()
    assert lib.net_create(ctypes.byref(ctx)) == 0
    ptr = lambda arr: arr.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    loss, y = np.zeros((), np.float32), np.zeros((4, 8), np.float32)
    for _ in range(2):
        assert lib.net_train_run(ctx, ptr(xv), ptr(tv), ptr(loss)) == 0
        train(xv, tv)
    assert lib.net_predict_run(ctx, ptr(xv), ptr(y)) == 0
    np.testing.assert_allclose(y, predict(xv), rtol=1e-4, atol=1e-6)
    lib.net_destroy(ctx)


# --- 4. checked, self-describing API --------------------------------------------------------
CHECKS_SRC = """
    #include <stdio.h>
    #include <string.h>
    #include "lr.h"
    int main(void) {
        lr_ctx *ctx = NULL;
        float X[LR_X_SIZE] = {0}, y[LR_Y_SIZE] = {0}, loss, w[LR_PARAM_W_SIZE];
        printf("abi %d %d\\n", lr_abi_version(), LR_ABI_VERSION);
        printf("null-create %d\\n", lr_create(NULL));
        if (lr_create(&ctx) != LR_OK) return 1;
        printf("null-run %d %s\\n", lr_run(ctx, NULL, y, &loss), lr_last_error(ctx));
        printf("null-ctx %d\\n", lr_run(NULL, X, y, &loss));
        printf("size %d\\n", lr_get_w(ctx, w, 2));
        printf("ok %d\\n", lr_get_w(ctx, w, LR_PARAM_W_SIZE));
        printf("strerror %s\\n", lr_strerror(LR_ERR_SIZE));
        printf("dims %d %d %d\\n", LR_X_NDIM, LR_X_DIM0, LR_X_DIM1);
        for (int i = 0; i < lr_num_tensors(); i++) {
            const lr_tensor_info *t = lr_tensor(i);
            printf("tensor %s %d %s %d %lld\\n", t->name, t->role, t->dtype, t->ndim, (long long)t->size);
        }
        printf("find %s\\n", lr_find_tensor(NULL, "loss")->dtype);
        printf("missing %d\\n", lr_find_tensor(NULL, "nope") == NULL);
        printf("past %d\\n", lr_tensor(99) == NULL);
        lr_destroy(ctx);
        lr_destroy(NULL);
        return 0;
    }
"""


def logistic():
    X = sg.tensor("X", (4, 3))
    y = sg.tensor("y", (4,))
    w = sg.shared(np.zeros(3, "float32"), "w")
    b = sg.shared(np.float32(0), "b")
    p = sg.sigmoid(X @ w + b)
    loss = -(y * sg.log(p) + (1 - y) * sg.log(1 - p)).mean()
    loss.name = "loss"
    gw, gb = sg.grad(loss, [w, b])
    return sg.compile([X, y], loss, updates=[(w, w - 0.5 * gw), (b, b - 0.5 * gb)])


def test_null_size_metadata_and_error_strings(tmp_path):
    f = logistic()
    f.export(str(tmp_path / "lr"))
    exe = build_c(tmp_path, CHECKS_SRC, "lr")
    out = run_c(exe).splitlines()
    assert out[:4] == ["abi 1 1", "null-create 1", "null-run 1 lr_run: input X is NULL", "null-ctx 1"]
    assert out[4:7] == ["size 3", "ok 0", "strerror a buffer has the wrong number of elements"]
    assert out[7] == "dims 2 4 3"
    assert out[8:13] == ["tensor X 0 float32 2 12", "tensor y 0 float32 1 4", "tensor loss 1 float32 0 1",
                         "tensor w 2 float32 1 3", "tensor b 2 float32 0 1"]
    assert out[13:] == ["find float32", "missing 1", "past 1"]


def test_c_program_matches_python_under_valgrind(tmp_path):
    f = logistic()
    Xv = ((np.arange(12) % 5) / 5 - 0.4).astype("float32").reshape(4, 3)
    yv = (np.arange(4) % 2).astype("float32")
    f.export(str(tmp_path / "lr"))
    src = """
        #include <stdio.h>
        #include "lr.h"
        int main(void) {
            float X[12], y[4], loss, w[3];
            for (int i = 0; i < 12; i++) X[i] = (float)(i % 5) / 5.0f - 0.4f;
            for (int i = 0; i < 4; i++) y[i] = (float)(i % 2);
            lr_ctx *ctx;
            if (lr_create(&ctx) != LR_OK) return 1;
            for (int it = 0; it < 3; it++) {
                if (lr_run(ctx, X, y, &loss)) return 2;
                printf("%.9g\\n", loss);
            }
            lr_get_w(ctx, w, LR_PARAM_W_SIZE);
            printf("%.9g %.9g %.9g\\n", w[0], w[1], w[2]);
            lr_destroy(ctx);
            return 0;
        }
    """
    exe = build_c(tmp_path, src, "lr")
    want = [float(f(Xv, yv)) for _ in range(3)]
    prefix = ()
    if shutil.which("valgrind"):
        prefix = ("valgrind", "-q", "--error-exitcode=9", "--leak-check=full", "--errors-for-leak-kinds=all")
    lines = run_c(exe, prefix=prefix).splitlines()
    np.testing.assert_allclose([float(v) for v in lines[:3]], want, rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in lines[3].split()], f.shared[0].get_value(), rtol=1e-5)


@pytest.mark.parametrize("path,name,match", [
    ("out/exp", None, "libm.so.6 already defines 'exp'.*name="),
    ("out/my-model", None, "not a plain C identifier.*name='my_model'"),
    ("out/ok", "pthread", "already defines 'pthread_create'"),
    ("out/ok", "2fast", "not a plain C identifier"),
])
def test_library_names_are_checked(tmp_path, path, name, match):
    f = logistic()
    with pytest.raises(ValueError, match=match):
        f.export(str(tmp_path / path), name=name)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_example_inputs_are_validated_like_a_call(tmp_path):
    X = sg.matrix("X")
    f = sg.compile([X], (X * 2).sum())
    with pytest.raises(ValueError) as call_err:
        f(np.zeros(3, np.float32))
    with pytest.raises(ValueError) as export_err:
        f.export(str(tmp_path / "m"), example_inputs=[np.zeros(3, np.float32)])
    assert str(export_err.value) == str(call_err.value)
    g = logistic()
    with pytest.raises(ValueError, match="dimension 0 must be 4"):
        g.export(str(tmp_path / "m"), example_inputs=[np.zeros((5, 3), np.float32), np.zeros(4, np.float32)])


def test_output_names_come_from_the_graph_and_shapes_are_fixed(tmp_path):
    _, predict, _ = mlp()
    header = Path(predict.export(str(tmp_path / "m"))["header"]).read_text()
    assert "int32_t m_run(m_ctx *ctx, const float *x, float *y);" in header
    assert "#define M_Y_DIM1 8" in header
    assert "SHAPES ARE FIXED" in header


def test_static_and_object_kinds_link_into_a_program(tmp_path):
    f = logistic()
    paths = f.export(str(tmp_path / "lr"), kind="static")
    assert paths["library"].endswith("lr.a")
    (tmp_path / "main.c").write_text(CHECKS_SRC)
    subprocess.run(["gcc", "-std=c11", "-o", str(tmp_path / "main"), str(tmp_path / "main.c"),
                    f"-I{tmp_path}", paths["library"], "-lm"], check=True)
    assert run_c(tmp_path / "main").startswith("abi 1 1")
    obj = f.export(str(tmp_path / "lro"), kind="object", name="lr")
    subprocess.run(["gcc", "-std=c11", "-o", str(tmp_path / "main2"), str(tmp_path / "main.c"),
                    f"-I{tmp_path}", obj["object"], "-lm"], check=True)
    assert run_c(tmp_path / "main2").startswith("abi 1 1")


def test_index_errors_return_the_status_per_context(tmp_path):
    emb = sg.shared(np.arange(12, dtype=np.float32).reshape(6, 2), name="emb")
    i = sg.tensor("i", (2,), dtype="int64")
    loss = sg.sum(emb[i] ** 2)
    f = sg.compile([i], loss, updates=sg.nn.sgd(loss, [emb], lr=0.1))
    f.export(str(tmp_path / "gather"))
    lib = ctypes.CDLL(str(tmp_path / "gather.so"))
    ctx = ctypes.c_void_p()
    assert lib.gather_create(ctypes.byref(ctx)) == 0
    out = np.zeros((), np.float32)
    weights = np.empty((6, 2), np.float32)

    def call(idx):
        idx = np.ascontiguousarray(idx, np.int64)
        return lib.gather_run(ctx, idx.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))

    assert call([0, 6]) == 2
    lib.gather_get_emb(ctx, weights.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(12))
    np.testing.assert_array_equal(weights, emb.get_value())
    assert call([-1, 5]) == 0
    assert out == float((np.arange(10, 12) ** 2).sum() * 2)


# --- generated GEMM loops -------------------------------------------------------------------
def _call_export(f, tmp_path, name, *args):
    paths = f.export(str(tmp_path / name), target="host")
    lib = ctypes.CDLL(paths["library"])
    ctx = ctypes.c_void_p()
    assert getattr(lib, f"{name}_create")(ctypes.byref(ctx)) == 0
    want = f(*args)
    out = np.zeros_like(want)
    ptrs = [np.ascontiguousarray(a).ctypes.data_as(ctypes.c_void_p) for a in args]
    assert getattr(lib, f"{name}_run")(ctx, *ptrs, out.ctypes.data_as(ctypes.c_void_p)) == 0
    getattr(lib, f"{name}_destroy")(ctx)
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,k,n", [(37, 45, 70), (64, 33, 129), (5, 300, 17)])
@pytest.mark.parametrize("trans", ["", "a", "b", "ab"])
def test_generated_gemm_matches_numpy(tmp_path, dtype, m, k, n, trans):
    """Register tiles, column / row remainders and transposed operands of the export's GEMM
    loops (the JIT path calls OpenBLAS for these sizes), against float64 NumPy."""
    av = np.random.default_rng(1).standard_normal((k, m) if "a" in trans else (m, k)).astype(dtype)
    bv = np.random.default_rng(2).standard_normal((n, k) if "b" in trans else (k, n)).astype(dtype)
    a = sg.tensor("a", av.shape, dtype=dtype)
    b = sg.tensor("b", bv.shape, dtype=dtype)
    f = sg.compile([a, b], (a.T if "a" in trans else a) @ (b.T if "b" in trans else b))
    got = _call_export(f, tmp_path, "mm", av, bv)
    a64 = av.astype(np.float64).T if "a" in trans else av.astype(np.float64)
    b64 = bv.astype(np.float64).T if "b" in trans else bv.astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, a64 @ b64, rtol=tol, atol=tol * np.sqrt(k))


def test_conv2d_and_its_gradient_in_an_export_match_torch(tmp_path):
    torch = pytest.importorskip("torch")
    xv = rand((2, 3, 12, 12), 7)
    wv = rand((8, 3, 3, 3), 8)
    x = sg.tensor("x", xv.shape)
    w = sg.tensor("w", wv.shape)
    y = sg.nn.conv2d(x, w, padding=1)  # im2col + GEMM; the weight gradient a transposed GEMM
    loss = (sg.tanh(y) ** 2).sum()
    f = sg.compile([x, w], sg.grad(loss, w))
    got = _call_export(f, tmp_path, "conv", xv, wv)
    xt = torch.tensor(xv, dtype=torch.float64)
    wt = torch.tensor(wv, dtype=torch.float64, requires_grad=True)
    (torch.tanh(torch.nn.functional.conv2d(xt, wt, padding=1)) ** 2).sum().backward()
    np.testing.assert_allclose(got, wt.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_a_function_without_inputs_exports_a_valid_signature(tmp_path):
    w = sg.shared(np.arange(6, dtype=np.float64).reshape(2, 3), "w")
    f = sg.compile([], w * 2, updates=[(w, w + 1)])
    header = Path(f.export(str(tmp_path / "counter"))["header"]).read_text()
    assert "int32_t counter_run(counter_ctx *ctx, double *out0);" in header
    lib = ctypes.CDLL(str(tmp_path / "counter.so"))
    ctx, out = ctypes.c_void_p(), np.zeros((2, 3))
    assert lib.counter_create(ctypes.byref(ctx)) == 0
    for _ in range(2):
        assert lib.counter_run(ctx, out.ctypes.data_as(ctypes.c_void_p)) == 0
    np.testing.assert_array_equal(out, (np.arange(6).reshape(2, 3) + 1) * 2)
    lib.counter_destroy(ctx)
    g = sg.compile([], None, updates=[(w, w * 3)])
    header = Path(g.export(str(tmp_path / "tick"))["header"]).read_text()
    assert "int32_t tick_run(tick_ctx *ctx);" in header
    lib = ctypes.CDLL(str(tmp_path / "tick.so"))
    assert lib.tick_create(ctypes.byref(ctx)) == 0 and lib.tick_run(ctx) == 0
    assert lib.tick_get_w(ctx, out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(6)) == 0
    np.testing.assert_array_equal(out, w.get_value() * 3)
    lib.tick_destroy(ctx)


# --- run-time sizes (dynamic=True) --------------------------------------------------------------
def _dynamic_step(seed=0):
    rng = np.random.default_rng(seed)
    params = [sg.shared((rng.standard_normal((8, 16)) * 0.3).astype("float32"), "W"),
              sg.shared(np.zeros(16, "float32"), "b"),
              sg.shared((rng.standard_normal((16, 3)) * 0.3).astype("float32"), "V")]
    x = sg.tensor("x", (None, 8))
    y = sg.tensor("y", (None,), dtype="int64")
    logits = sg.relu(x @ params[0] + params[1]) @ params[2]
    logits.name = "logits"
    loss = sg.nn.cross_entropy(logits, y)
    loss.name = "loss"
    grads = sg.grad(loss, params)
    train = sg.compile([x, y], [loss, logits],
                       updates=[(p, p - 0.1 * g) for p, g in zip(params, grads)])
    train(rand((5, 8)), np.zeros(5, np.int64))  # generates the shape-generic code
    return train, params


def test_dynamic_export_serves_every_batch_size(tmp_path):
    """One library for every batch size: a training step called from C with batches of 1, 7,
    64, 0 and 3 rows gives Python's losses, outputs and parameters."""
    train, params = _dynamic_step()
    paths = train.export(str(tmp_path / "dyn"), dynamic=True)
    header = Path(paths["header"]).read_text()
    assert "RUN-TIME SIZES" in header and "#define DYN_LOGITS_SIZE(x_dim0, y_dim0)" in header
    lib = ctypes.CDLL(paths["library"])
    lib.dyn_last_error.restype = ctypes.c_char_p
    ctx = ctypes.c_void_p()
    assert lib.dyn_create(ctypes.byref(ctx)) == 0
    ptr = lambda arr: arr.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    rng = np.random.default_rng(1)
    for n in (1, 7, 64, 0, 3):
        xv, yv = rand((n, 8), n), rng.integers(0, 3, n)
        want_loss, want_logits = train(xv, yv)
        loss, logits = np.zeros((), np.float32), np.zeros((n, 3), np.float32)
        n64 = ctypes.c_int64(n)
        assert lib.dyn_run(ctx, n64, n64, ptr(xv), ptr(yv), ptr(loss), ptr(logits)) == 0
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)  # (NaN for 0 rows, as NumPy)
        np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-6)
    for p in params:
        got = np.zeros(p.get_value().shape, np.float32)
        getter = getattr(lib, f"dyn_get_{p.name}")
        assert getter(ctx, ptr(got), ctypes.c_int64(got.size)) == 0
        np.testing.assert_allclose(got, p.get_value(), rtol=1e-5, atol=1e-6)
    # sizes the code does not serve (the batch dims of x and y must agree) change nothing
    before = np.zeros((16, 3), np.float32)
    lib.dyn_get_V(ctx, ptr(before), ctypes.c_int64(before.size))
    status = lib.dyn_run(ctx, ctypes.c_int64(4), ctypes.c_int64(3), ptr(xv), ptr(yv), ptr(loss),
                         ptr(logits))
    assert status == 3 and b"x_dim0 - y_dim0" in lib.dyn_last_error(ctx)  # DYN_ERR_SIZE
    assert lib.dyn_run(ctx, ctypes.c_int64(-1), ctypes.c_int64(-1), ptr(xv), ptr(yv), ptr(loss),
                       ptr(logits)) == 3
    after = np.zeros((16, 3), np.float32)
    lib.dyn_get_V(ctx, ptr(after), ctypes.c_int64(after.size))
    np.testing.assert_array_equal(before, after)
    lib.dyn_destroy(ctx)


def test_dynamic_export_from_c_with_the_size_macros(tmp_path):
    """A C program sizes its buffers with the header's function-like macros; the metadata
    reports run-time sizes as -1."""
    train, _ = _dynamic_step(seed=2)
    train.export(str(tmp_path / "dyn"), dynamic=True, target="host")
    exe = build_c(tmp_path, """
        #include <stdio.h>
        #include <stdlib.h>
        #include "dyn.h"
        int main(void) {
            dyn_ctx *ctx;
            if (dyn_create(&ctx) != DYN_OK) return 1;
            const dyn_tensor_info *x = dyn_find_tensor("", "x");
            printf("meta %lld %lld %lld\\n", (long long)x->shape[0], (long long)x->shape[1],
                   (long long)x->size);
            for (int64_t n = 1; n <= 33; n += 16) {
                float *xs = calloc(DYN_X_SIZE(n, n), sizeof(float));
                int64_t *ys = calloc(DYN_Y_SIZE(n, n), sizeof(int64_t));
                float *logits = malloc(DYN_LOGITS_SIZE(n, n) * sizeof(float));
                float loss;
                for (int64_t i = 0; i < DYN_X_SIZE(n, n); i++) xs[i] = (float)(i % 7) / 7.0f;
                for (int64_t i = 0; i < n; i++) ys[i] = i % 3;
                if (dyn_run(ctx, n, n, xs, ys, &loss, logits) != DYN_OK) return 2;
                printf("%lld %.6f %.6f\\n", (long long)n, loss, logits[DYN_LOGITS_SIZE(n, n) - 1]);
                free(xs); free(ys); free(logits);
            }
            dyn_destroy(ctx);
            return 0;
        }
    """, "dyn")
    lines = run_c(exe).split("\n")
    assert lines[0] == "meta -1 8 -1"
    for line in filter(None, lines[1:]):
        n, loss, last = line.split()
        n = int(n)
        xv = (np.arange(n * 8) % 7 / 7.0).astype(np.float32).reshape(n, 8)
        want_loss, want_logits = train(xv, np.arange(n) % 3)
        np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
        np.testing.assert_allclose(float(last), want_logits.reshape(-1)[-1], rtol=1e-5, atol=1e-6)


def test_dynamic_export_needs_shape_generic_code(tmp_path):
    x = sg.tensor("x", (4, 8))
    f = sg.compile([x], x * 2)
    with pytest.raises(sg.CompileError, match="not shape-generic"):
        f.export(str(tmp_path / "fixed"), dynamic=True)


def test_adam_step_with_run_time_batch_sizes_under_valgrind(tmp_path):
    """An Adam training step exported with run-time sizes, driven from C with batches of 5, 2,
    9 and 5 rows: the losses and the parameters after the last step are Python's (valgrind:
    no invalid access or leak in the run-time buffer)."""
    rng = np.random.default_rng(3)
    w1 = sg.shared((rng.standard_normal((6, 10)) * 0.4).astype("float32"), "w1")
    w2 = sg.shared((rng.standard_normal((10, 3)) * 0.4).astype("float32"), "w2")
    x = sg.tensor("x", (None, 6))
    y = sg.tensor("y", (None,), dtype="int64")
    loss = sg.nn.cross_entropy(sg.tanh(x @ w1) @ w2, y)
    loss.name = "loss"
    step = sg.compile([x, y], loss, updates=sg.nn.adam(loss, [w1, w2], lr=0.05))
    batches = (5, 2, 9, 5)

    def data(n, k):
        xv = (((np.arange(n * 6) + 3 * k) % 11) / 11.0 - 0.5).astype(np.float32).reshape(n, 6)
        return xv, ((np.arange(n) + k) % 3).astype(np.int64)

    step.export(str(tmp_path / "adam"), dynamic=True, example_inputs=data(4, 0))
    exe = build_c(tmp_path, """
        #include <stdio.h>
        #include <stdlib.h>
        #include "adam.h"
        int main(void) {
            const int64_t batches[4] = {5, 2, 9, 5};
            adam_ctx *ctx;
            if (adam_create(&ctx) != ADAM_OK) return 1;
            for (int k = 0; k < 4; k++) {
                int64_t n = batches[k];
                float *x = malloc(ADAM_X_SIZE(n, n) * sizeof(float));
                int64_t *y = malloc(ADAM_Y_SIZE(n, n) * sizeof(int64_t));
                for (int64_t i = 0; i < n * 6; i++) x[i] = (float)((i + 3 * k) % 11) / 11.0f - 0.5f;
                for (int64_t i = 0; i < n; i++) y[i] = (i + k) % 3;
                float loss;
                if (adam_run(ctx, n, n, x, y, &loss) != ADAM_OK) return 2;
                printf("%.9g\\n", loss);
                free(x); free(y);
            }
            float w2[ADAM_PARAM_W2_SIZE];
            adam_get_w2(ctx, w2, ADAM_PARAM_W2_SIZE);
            for (int i = 0; i < ADAM_PARAM_W2_SIZE; i++) printf("%.9g ", w2[i]);
            printf("\\n");
            adam_destroy(ctx);
            return 0;
        }
    """, "adam")
    prefix = ()
    if shutil.which("valgrind"):
        prefix = ("valgrind", "-q", "--error-exitcode=9", "--leak-check=full", "--errors-for-leak-kinds=all")
    lines = run_c(exe, prefix=prefix).splitlines()
    want = [float(step(*data(n, k))) for k, n in enumerate(batches)]
    np.testing.assert_allclose([float(v) for v in lines[:4]], want, rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in lines[4].split()], w2.get_value().reshape(-1),
                               rtol=1e-4, atol=1e-6)
