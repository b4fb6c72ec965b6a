"""The digits MLP trained data-parallel on several processes over MPI (``sg.distributed``).

Run it with ``mpiexec -n 2 python examples/distributed_mlp.py`` (needs the ``[mpi]`` extra:
mpi4py and mpich).  Every process builds the same model; rank 0's initial weights are
broadcast; each global batch is split between the processes; the gradients are averaged over
all processes inside the compiled training step; rank 0 prints and saves the checkpoint.
Run with one process, it trains exactly as examples/digits_mlp.py would with the same batches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_mlp import build_model, load_data  # noqa: E402

import symgraph as sg  # noqa: E402
from symgraph import distributed as dist  # noqa: E402


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="llvm",
                        help="llvm (default), reference or cuda (one GPU per process)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="global batch (all processes)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--checkpoint", default=None, help="save the trained model here (.npz)")
    args = parser.parse_args(argv)

    dist.init(timeout=300)  # a rank that dies or hangs ends the job instead of blocking it
    (x_train, y_train), (x_test, y_test) = load_data()
    x = sg.tensor("x", (None, 64))
    y = sg.tensor("y", (None,), dtype="int64")
    params = build_model()
    dist.broadcast(params)  # every process starts from rank 0's weights
    w1, b1, w2, b2 = params

    logits = sg.relu(x @ w1 + b1) @ w2 + b2
    loss = sg.nn.cross_entropy(logits, y)
    grads = sg.grad(loss, params)
    updates = [(p, p - args.lr * g) for p, g in zip(params, grads)]
    updates = dist.data_parallel(updates, grads, params)  # gradients averaged over processes
    train_step = sg.compile([x, y], loss, updates=updates, backend=args.backend)
    predict = sg.compile([x], sg.argmax(logits, axis=1), backend=args.backend)

    t0 = time.perf_counter()
    acc = float("nan")
    for epoch in range(args.epochs):
        losses = [train_step(xb, yb) for xb, yb in
                  dist.shard(x_train, y_train, batch_size=args.batch, seed=epoch, drop_last=True)]
        # each process tested on its own part of the test set; the mean over all examples
        part = np.array_split(np.arange(len(x_test)), dist.size())[dist.rank()]
        local = {"loss": float(np.mean(losses)),
                 "accuracy": float(np.mean(predict(x_test[part]) == y_test[part]))}
        metrics = dist.reduce_metrics(local, weight=len(part))
        acc = metrics["accuracy"]
        if dist.is_main() and (epoch % 5 == 4 or epoch == args.epochs - 1):
            print(f"epoch {epoch + 1:3d}  loss {metrics['loss']:.4f}  test accuracy {acc:.3f}")
    if dist.is_main():
        print(f"trained on {dist.size()} processes in {time.perf_counter() - t0:.2f} s")
    if args.checkpoint:
        dist.save_checkpoint(args.checkpoint, params, epochs=args.epochs)
    return acc


if __name__ == "__main__":
    main()
