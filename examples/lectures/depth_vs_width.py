"""Depth versus width at an equal number of parameters: ReLU MLPs of 1 to 4 hidden layers,
each as wide as the budget of ~20,000 parameters allows, trained alike on the digits."""

from __future__ import annotations

from common import classifier, digits, figure, parser, train

import symgraph as sg

BUDGET = 20_000


def width_for(depth: int) -> int:
    """The largest width whose 64 -> (width x depth) -> 10 MLP stays within the budget."""
    w = 1
    while 64 * (w + 1) + (w + 1) + (depth - 1) * ((w + 1) ** 2 + w + 1) + 10 * (w + 1) + 10 <= BUDGET:
        w += 1
    return w


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    data = digits()
    (_, _), (xv, yv) = data
    epochs = 2 if args.quick else 30
    results, curves = {}, {}
    for depth in (1, 2, 3, 4):
        sg.seed(0)
        width = width_for(depth)
        sizes = [64] + [width] * depth
        layers = [sg.nn.Dense(a, b, "relu") for a, b in zip(sizes, sizes[1:])] + [sg.nn.Dense(width, 10)]
        model = sg.nn.Sequential(*layers)
        step, _, predict = classifier(model, args.backend, sg.nn.adam, lr=1e-3)
        curves[depth] = train(step, data, epochs, batch=32)
        results[depth] = sg.nn.accuracy(predict(xv), yv)
        print(f"depth {depth}, width {width:4d}: {model.count():6d} parameters, "
              f"validation accuracy {results[depth]:.3f}")

    def draw(plt):
        for depth, curve in curves.items():
            plt.semilogy(curve, label=f"{depth} hidden layer(s), width {width_for(depth)}")
        plt.xlabel("epoch")
        plt.ylabel("training loss")
        plt.legend()
        plt.title(f"Depth vs width at {BUDGET:,} parameters")
    figure(args.plot, "depth_vs_width", draw)
    return results


if __name__ == "__main__":
    main()
