"""Training-loop helpers: minibatches, early stopping, checkpoints, metrics, progress, summaries.

They work on NumPy arrays and shared variables only, so they fit any training loop, with or
without the layer objects of ``sg.nn.layers``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ..graph.basic import SharedVariable
from ..ops.random import package_rng


def minibatches(*arrays: np.ndarray, batch_size: int, shuffle: bool = True, seed=None,
                drop_last: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """One epoch of aligned minibatches of ``arrays`` (all with the same first dimension).

    ``shuffle`` draws a permutation from ``seed`` (an int or Generator; None: the package-level
    generator, which ``sg.seed`` resets); ``drop_last`` leaves out a final short batch."""
    if not arrays:
        raise ValueError("minibatches: give at least one array")
    if batch_size <= 0:
        raise ValueError(f"minibatches: batch_size must be positive, got {batch_size}")
    n = len(arrays[0])
    for k, a in enumerate(arrays[1:], 1):
        if len(a) != n:
            raise ValueError(f"minibatches: array {k} has {len(a)} rows but array 0 has {n}")
    if shuffle:
        rng = package_rng() if seed is None else (
            seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed))
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield tuple(np.ascontiguousarray(a[idx]) for a in arrays)


class EarlyStopping:
    """Stop when a validation metric has not improved for ``patience`` checks.

    ``step(value)`` returns True when training should stop; ``best`` and ``best_step`` tell the
    best value so far and when it was seen. With ``params``, the best parameters are kept and
    ``restore()`` puts them back."""

    def __init__(self, patience: int = 5, mode: str = "min", min_delta: float = 0.0,
                 params: Sequence[SharedVariable] = ()):
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.mode, self.min_delta = int(patience), mode, float(min_delta)
        self.params = list(params)
        self.best: float | None = None
        self.best_step = -1
        self.steps = 0
        self._saved: list[np.ndarray] = []

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float) -> bool:
        """Record one validation value; True when ``patience`` checks passed with no improvement."""
        value = float(value)
        if self.improved(value):
            self.best, self.best_step = value, self.steps
            self._saved = [p.get_value() for p in self.params]
        self.steps += 1
        return self.steps - 1 - self.best_step >= self.patience

    def restore(self) -> None:
        """Set the parameters back to their values at the best step."""
        for p, v in zip(self.params, self._saved):
            p.set_value(v)


def _param_key(i: int) -> str:
    # by position, not name: automatic layer names (dense0, dense1...) depend on what else the
    # process built, so the same model may carry other names in another process
    return f"param:{i}"


def save_checkpoint(path, params: Sequence[SharedVariable], optimizer=None, **extra) -> None:
    """Write parameters, optimiser state and ``extra`` arrays/numbers to ``path`` (``.npz``).

    The file is written to a temporary name and renamed, so a crash never leaves half a file."""
    data = {_param_key(i): p.get_value() for i, p in enumerate(params)}
    if optimizer is not None:
        data.update({f"opt:{k}": v for k, v in optimizer.state_dict().items()})
    data.update({f"extra:{k}": np.asarray(v) for k, v in extra.items()})
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, params: Sequence[SharedVariable], optimizer=None) -> dict:
    """Restore what ``save_checkpoint`` wrote; returns the ``extra`` entries.

    Every entry is checked (present, same shape) before anything is set, so a mismatched
    checkpoint changes nothing."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    values = []
    for i, p in enumerate(params):
        key = _param_key(i)
        if key not in data:
            raise KeyError(f"load_checkpoint: {path} has no entry {key!r} for parameter {p.label()!r}")
        arr = data[key]
        if arr.shape != p.get_value().shape:
            raise ValueError(f"load_checkpoint: parameter {p.label()!r} has shape {p.get_value().shape} "
                             f"but the checkpoint holds {arr.shape}")
        values.append(arr)
    if optimizer is not None:
        opt = {k[4:]: v for k, v in data.items() if k.startswith("opt:")}
        optimizer.load_state_dict(opt)  # checks all, then sets
    for p, v in zip(params, values):
        p.set_value(v)
    return {k[6:]: (v.item() if v.ndim == 0 else v) for k, v in data.items() if k.startswith("extra:")}


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max (or label, for integer predictions) equals ``labels``."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim == labels.ndim + 1:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"accuracy: predictions {predictions.shape} and labels {labels.shape} differ")
    return float(np.mean(predictions == labels)) if labels.size else float("nan")


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``m[true, predicted]`` counts (predictions as class indices or score rows)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim == labels.ndim + 1:
        predictions = predictions.argmax(axis=-1)
    n = n_classes or int(max(predictions.max(initial=-1), labels.max(initial=-1)) + 1)
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return m


def progress(iterable: Iterable, total: int | None = None, desc: str | None = None, **kw):
    """``iterable`` with a tqdm progress bar when tqdm is installed (the ``examples`` extra),
    else unchanged."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, **kw)


def summary(params: Sequence[SharedVariable]) -> str:
    """A table of parameters: name, shape, dtype and count, with the total."""
    rows = [("parameter", "shape", "dtype", "count")]
    total = 0
    for p in params:
        v = p.get_value()
        total += v.size
        rows.append((p.label(), str(v.shape), str(v.dtype), f"{v.size:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"
             for r in rows]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:], rule, f"total: {total:,}"])


__all__ = ["minibatches", "EarlyStopping", "save_checkpoint", "load_checkpoint", "accuracy",
           "confusion_matrix", "progress", "summary"]
