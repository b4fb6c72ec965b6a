"""A digits convnet with the sg.nn toolkit: batch norm, dropout, Adam on a cosine schedule, early
stopping and a checkpoint (``--resume`` restores it, e.g. in a fresh process)."""
import argparse

import numpy as np
from sklearn.datasets import load_digits

import symgraph as sg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", default="llvm")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--checkpoint", default="digits_toolkit.npz")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    sg.seed(0)
    d = load_digits()
    xs, ys = (d.images / 16).astype(np.float32)[:, None], d.target.astype(np.int64)
    (xt, yt), (xv, yv) = (xs[:1400], ys[:1400]), (xs[1400:], ys[1400:])
    model = sg.nn.Sequential(sg.nn.Conv2d(1, 16, 3, padding=1, activation="relu"), sg.nn.BatchNorm(16),
                             sg.nn.MaxPool2d(2), sg.nn.Flatten(), sg.nn.Dropout(0.3), sg.nn.Dense(256, 10))
    x, y = sg.tensor("x", (None, 1, 8, 8)), sg.tensor("y", (None,), dtype="int64")
    loss = sg.nn.cross_entropy(model(x, train=True), y)
    opt = sg.nn.adam(loss, model.params, lr=sg.nn.schedules.cosine(3e-3, total_steps=args.epochs * 22))
    step = sg.compile([x, y], loss, updates=opt + sg.nn.state_updates(loss), backend=args.backend)
    predict = sg.compile([x], model(x), backend=args.backend)
    if args.resume:  # e.g. in a fresh process: the same model, then the saved values
        sg.nn.load_checkpoint(args.checkpoint, model.params + model.state, opt)
        return sg.nn.accuracy(predict(xv), yv)
    stop = sg.nn.EarlyStopping(patience=3, mode="max", params=model.params + model.state)
    for _ in sg.nn.progress(range(args.epochs), desc="epochs"):
        for xb, yb in sg.nn.minibatches(xt, yt, batch_size=64):
            step(xb, yb)
        if stop.step(sg.nn.accuracy(predict(xv), yv)):
            break
    stop.restore()
    sg.nn.save_checkpoint(args.checkpoint, model.params + model.state, opt, epoch=stop.best_step + 1)
    print(f"validation accuracy {stop.best:.3f} (epoch {stop.best_step + 1})")
    return stop.best


if __name__ == "__main__":
    main()
