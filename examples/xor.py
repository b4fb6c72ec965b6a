"""Learn XOR with a 2-2-1 network, gradients from ``sg.grad``.

The smallest network that can represent XOR: two tanh hidden units and a sigmoid output,
trained by full-batch gradient descent on the binary cross-entropy.  The gradients are graph
nodes that symgraph builds from the loss; one compiled call runs forward, backward and the
parameter updates.

    python examples/xor.py [--backend reference|llvm|cuda] [--steps 300] [--seed 4]
"""

from __future__ import annotations

import argparse

import numpy as np

import symgraph as sg

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([0, 1, 1, 0], dtype=np.float32)


def build(seed: int):
    """Parameters of the 2-2-1 network, drawn from a fixed seed."""
    rng = np.random.default_rng(seed)
    w1 = sg.shared(rng.normal(0.0, 1.0, (2, 2)).astype(np.float32), name="w1")
    b1 = sg.shared(np.zeros(2, np.float32), name="b1")
    w2 = sg.shared(rng.normal(0.0, 1.0, (2, 1)).astype(np.float32), name="w2")
    b2 = sg.shared(np.zeros(1, np.float32), name="b2")
    return [w1, b1, w2, b2]


def train(backend: str = "reference", steps: int = 300, lr: float = 2.0, seed: int = 4):
    """Train and return ``(losses, predicted probabilities)``."""
    x = sg.tensor("x", (None, 2))
    y = sg.tensor("y", (None,))
    w1, b1, w2, b2 = params = build(seed)
    hidden = sg.tanh(x @ w1 + b1)
    logit = (hidden @ w2 + b2)[:, 0]
    loss = sg.nn.binary_cross_entropy(logit, y)
    grads = sg.grad(loss, params)
    step = sg.compile([x, y], loss, updates=[(p, p - lr * g) for p, g in zip(params, grads)],
                      backend=backend)
    predict = sg.compile([x], sg.sigmoid(logit), backend=backend)
    losses = [float(step(X, Y)) for _ in range(steps)]
    return losses, predict(X)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="reference", help="reference, llvm or cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    losses, probs = train(args.backend, args.steps, args.lr, args.seed)
    for i in (0, len(losses) // 4, len(losses) // 2, len(losses) - 1):
        print(f"step {i:5d}  loss {losses[i]:.4f}")
    for inp, p, t in zip(X, probs, Y):
        print(f"{inp.astype(int)} -> {p:.3f} (target {int(t)})")
    ok = bool(np.all((probs > 0.5) == (Y > 0.5)))
    print("learned XOR" if ok else "did not learn XOR")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
