"""Export a compiled symgraph function as a C library and call it from C.

Trains a softmax classifier on the scikit-learn digits, exports ``predict(images) -> probs`` at
batch ``BATCH`` with ``f.export("build/digits", name="predict")`` (``build/digits.so`` + ``build/digits.h``:
a self-contained library for x86-64-v3 CPUs that needs only libc and libm),
builds ``main.c`` against it with the system C compiler, runs it on the test images and checks
its output against the Python call.  Exits with a clear message (status 0) where export or a C
compiler is not available.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import numpy as np
from sklearn.datasets import load_digits

import symgraph as sg

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 8


def train_classifier(backend: str):
    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)
    y_all = digits.target.astype(np.int64)
    x = sg.tensor("images", (BATCH, 64))
    y = sg.tensor("labels", (BATCH,), dtype="int64")
    w = sg.shared(np.zeros((64, 10), np.float32), name="w")
    b = sg.shared(np.zeros(10, np.float32), name="b")
    logits = x @ w + b
    loss = sg.nn.cross_entropy(logits, y)
    step = sg.compile([x, y], loss, updates=sg.nn.sgd(loss, [w, b], lr=0.5), backend=backend)
    for _epoch in range(3):
        for i in range(0, 1600 - BATCH, BATCH):
            step(x_all[i:i + BATCH], y_all[i:i + BATCH])
    probs = sg.nn.softmax(logits)
    probs.name = "probs"  # the C argument's name (and PREDICT_PROBS_SIZE)
    predict = sg.compile([x], probs, backend=backend)
    return predict, x_all[1600:1600 + BATCH], y_all[1600:1600 + BATCH]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", default="llvm")
    ap.add_argument("--build-dir", default=os.path.join(HERE, "build"))
    args = ap.parse_args(argv)
    predict, images, labels = train_classifier(args.backend)
    expected = predict(images)  # also specialises the function on its shapes
    if not hasattr(predict, "export"):
        print("skipped: this symgraph has no f.export yet (it comes with the llvm backend)")
        return "skipped"
    os.makedirs(args.build_dir, exist_ok=True)
    lib = os.path.join(args.build_dir, "digits")
    try:
        predict.export(lib, name="predict")
    except (sg.CompileError, NotImplementedError, TypeError) as e:
        print(f"skipped: f.export is not available for the {args.backend} backend ({e})")
        return "skipped"
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        print(f"exported {lib}.so and {lib}.h; no C compiler found, so main.c was not built")
        return "exported"
    exe = os.path.join(args.build_dir, "main")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "main.c"), f"-I{args.build_dir}",
                    f"{lib}.so", f"-Wl,-rpath,{args.build_dir}"], check=True)
    images_path = os.path.join(args.build_dir, "images.f32")
    images.astype(np.float32).tofile(images_path)
    out = subprocess.run([exe, images_path], check=True, capture_output=True, text=True).stdout
    print(out, end="")
    got = np.array([[float(v) for v in line.split()[1:]] for line in out.splitlines()
                    if line.startswith("probs")], dtype=np.float32)
    err = float(np.max(np.abs(got - expected)))
    print(f"C output vs Python: max abs difference {err:.2e}; labels {labels.tolist()}, "
          f"C argmax {got.argmax(axis=1).tolist()}")
    if err > 1e-4:
        sys.exit("the C program disagrees with the Python call")
    return "ok"


if __name__ == "__main__":
    main()
