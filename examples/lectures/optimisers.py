"""The seven optimisers of ``sg.nn`` on one problem: the same MLP, the same data, the same
starting weights, one loss curve each."""

from __future__ import annotations

from common import classifier, digits, figure, parser, train

import symgraph as sg

SETTINGS = {"sgd": dict(lr=0.1), "momentum": dict(lr=0.05, mu=0.9), "nesterov": dict(lr=0.05, mu=0.9),
            "adagrad": dict(lr=0.05), "rmsprop": dict(lr=0.001), "adadelta": dict(lr=1.0),
            "adam": dict(lr=0.001)}


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    data = digits()
    epochs = 2 if args.quick else 20
    curves = {}
    for name, kw in SETTINGS.items():
        sg.seed(0)
        model = sg.nn.Sequential(sg.nn.Dense(64, 64, "tanh"), sg.nn.Dense(64, 10))
        step, _, _ = classifier(model, args.backend, getattr(sg.nn, name), **kw)
        curves[name] = train(step, data, epochs, batch=32)
        print(f"{name:9s} {kw}: training loss {curves[name][0]:.3f} -> {curves[name][-1]:.4f}")

    def draw(plt):
        for name, curve in curves.items():
            plt.semilogy(range(1, len(curve) + 1), curve, label=name)
        plt.xlabel("epoch")
        plt.ylabel("training loss")
        plt.legend()
        plt.title("Seven optimisers, one problem")
    figure(args.plot, "optimisers", draw)
    return {k: v[-1] for k, v in curves.items()}


if __name__ == "__main__":
    main()
