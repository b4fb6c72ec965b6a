"""Overfitting and four cures on a small digits training set: L2 weight decay, dropout,
maxout units and early stopping, each against the same unregularised MLP.

With 100 training images a 64-256-256-10 network memorises its data; the validation loss
curves show how each method holds it back.
"""

from __future__ import annotations

from common import classifier, digits, figure, parser

import symgraph as sg


def build(kind: str):
    sg.seed(1)
    if kind == "maxout":
        return sg.nn.Sequential(sg.nn.Dense(64, 512), sg.nn.Maxout(2), sg.nn.Dense(256, 512), sg.nn.Maxout(2),
                                sg.nn.Dense(256, 10))
    drop = 0.5 if kind == "dropout" else 0.0
    layers = [sg.nn.Dense(64, 256, "relu"), sg.nn.Dropout(drop), sg.nn.Dense(256, 256, "relu"),
              sg.nn.Dropout(drop), sg.nn.Dense(256, 10)]
    return sg.nn.Sequential(*[la for la in layers if not isinstance(la, sg.nn.Dropout) or drop])


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    data = digits(n_train=100)
    (xt, yt), (xv, yv) = data
    epochs = 3 if args.quick else 150
    curves, accs = {}, {}
    for kind in ("none", "l2", "dropout", "maxout", "early stopping"):
        model = build(kind)
        decay = 3e-3 if kind == "l2" else 0.0
        step, eval_loss, predict = classifier(model, args.backend, sg.nn.momentum, lr=0.1,
                                              weight_decay=decay)
        stop = sg.nn.EarlyStopping(patience=10, params=model.params)
        val = curves[kind] = []
        for _ in range(epochs):
            for xb, yb in sg.nn.minibatches(xt, yt, batch_size=25, seed=0):
                step(xb, yb)
            val.append(float(eval_loss(xv, yv)))
            if kind == "early stopping" and stop.step(val[-1]):
                stop.restore()
                break
        accs[kind] = sg.nn.accuracy(predict(xv), yv)
        print(f"{kind:15s} validation loss {val[-1]:.3f} (best {min(val):.3f})  accuracy {accs[kind]:.3f}")

    def draw(plt):
        for kind, val in curves.items():
            plt.plot(val, label=kind)
        plt.xlabel("epoch")
        plt.ylabel("validation loss")
        plt.ylim(0, 1.0)
        plt.legend()
        plt.title("Regularisation on 100 training digits")
    figure(args.plot, "regularisation", draw)
    return accs


if __name__ == "__main__":
    main()
