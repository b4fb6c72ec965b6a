"""sg.nn's training toolkit against PyTorch: layers, batch norm's running statistics, optimiser
options (weight decay, clipping, schedules), seeding, checkpoints and the loop helpers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symgraph as sg

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["llvm", "reference"]


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


# --- layers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_and_conv_layers_match_torch(backend):
    rng = np.random.default_rng(0)
    conv = sg.nn.Conv2d(2, 3, 3, padding=1, activation="relu", dtype="float64")
    dense = sg.nn.Dense(3 * 4 * 4, 5, activation="tanh", dtype="float64")
    model = sg.nn.Sequential(conv, sg.nn.MaxPool2d(2), sg.nn.Flatten(), dense)
    conv.b.set_value(rng.standard_normal(3))
    x = sg.tensor("x", (None, 2, 8, 8), dtype="float64")
    f = sg.compile([x], model(x), backend=backend)
    xv = rng.standard_normal((4, 2, 8, 8))
    tx = _t(xv)
    y = torch.relu(torch.nn.functional.conv2d(tx, _t(conv.w.get_value()), _t(conv.b.get_value()), padding=1))
    y = torch.nn.functional.max_pool2d(y, 2).flatten(1)
    y = torch.tanh(y @ _t(dense.w.get_value()) + _t(dense.b.get_value()))
    np.testing.assert_allclose(f(xv), y.numpy(), rtol=1e-10, atol=1e-12)
    assert [p.name for p in model.params] == [f"{conv.name}.w", f"{conv.name}.b",
                                              f"{dense.name}.w", f"{dense.name}.b"]
    assert "trainable parameters: 302" in model.summary((1, 2, 8, 8))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5)])
def test_batchnorm_train_and_eval_match_torch(backend, shape):
    rng = np.random.default_rng(1)
    n = shape[1]
    bn = sg.nn.BatchNorm(n, momentum=0.1, eps=1e-5, dtype="float64")
    bn.gamma.set_value(rng.uniform(0.5, 1.5, n))
    bn.beta.set_value(rng.standard_normal(n))
    x = sg.tensor("x", (None,) + shape[1:], dtype="float64")
    y_train = bn(x, train=True)
    updates = sg.nn.state_updates(y_train)
    assert {id(t) for t, _ in updates} == {id(bn.running_mean), id(bn.running_var)}
    train = sg.compile([x], y_train, updates=updates, backend=backend)
    evaluate = sg.compile([x], bn(x, train=False), backend=backend)

    tbn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(n, momentum=0.1, eps=1e-5)
    tbn = tbn.double()
    with torch.no_grad():
        tbn.weight.copy_(_t(bn.gamma.get_value()))
        tbn.bias.copy_(_t(bn.beta.get_value()))
    for _ in range(3):
        xv = rng.standard_normal(shape) * 3 + 1
        tbn.train()
        np.testing.assert_allclose(train(xv), tbn(_t(xv)).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean.get_value(), tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.get_value(), tbn.running_var.numpy(), rtol=1e-12)
    tbn.eval()
    xv = rng.standard_normal(shape)
    np.testing.assert_allclose(evaluate(xv), tbn(_t(xv)).detach().numpy(), rtol=1e-10, atol=1e-12)
    assert sg.nn.state_updates(bn(x, train=False)) == []


def test_dropout_layer_switches_with_train():
    x = sg.matrix("x")
    drop = sg.nn.Dropout(0.5)
    xv = np.ones((50, 40), np.float32)
    on = sg.compile([x], drop(x, train=True))(xv)
    off = sg.compile([x], drop(x, train=False))(xv)
    assert set(np.unique(on)) == {0.0, 2.0}
    np.testing.assert_array_equal(off, xv)


def test_unseeded_initialisers_differ_and_sg_seed_reproduces():
    sg.seed(123)
    a, b = sg.nn.init.glorot_uniform((4, 4)), sg.nn.init.glorot_uniform((4, 4))
    s1, s2 = sg.RandomStream(), sg.RandomStream()
    assert not np.array_equal(a.get_value(), b.get_value())
    assert s1.seed != s2.seed
    sg.seed(123)
    a2 = sg.nn.init.glorot_uniform((4, 4))
    np.testing.assert_array_equal(a.get_value(), a2.get_value())
    sg.seed(123)
    sg.nn.init.glorot_uniform((4, 4)), sg.nn.init.glorot_uniform((4, 4))
    assert sg.RandomStream().seed == s1.seed


# --- optimisers -------------------------------------------------------------------------------

def _torch_run(opt_name, w0, xs, ys, steps, sched=None, clip_norm=None, clip_value=None, **kw):
    w = torch.tensor(w0.copy(), requires_grad=True)
    opt = getattr(torch.optim, opt_name)([w], **kw)
    scheduler = sched(opt) if sched else None
    for _ in range(steps):
        opt.zero_grad()
        loss = ((_t(xs) @ w - _t(ys)) ** 2).mean()
        loss.backward()
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_([w], clip_value)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([w], clip_norm)
        opt.step()
        if scheduler:
            scheduler.step()
    return w.detach().numpy()


def _sg_run(opt_fn, w0, xs, ys, steps, backend="llvm", **kw):
    w = sg.shared(w0.copy(), name="w")
    x, y = sg.matrix("x", "float64"), sg.matrix("y", "float64")
    loss = sg.mean(sg.square(x @ w - y))
    opt = opt_fn(loss, [w], **kw)
    step = sg.compile([x, y], loss, updates=opt, backend=backend)
    for _ in range(steps):
        step(xs, ys)
    return w.get_value(), opt


def _problem():
    rng = np.random.default_rng(2)
    return rng.standard_normal((3, 2)), rng.standard_normal((8, 3)) * 4, rng.standard_normal((8, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [
    ("sgd", "SGD", dict(lr=0.05, weight_decay=0.1), {}),
    ("sgd", "SGD", dict(lr=0.05, clip_norm=0.5), {}),
    ("sgd", "SGD", dict(lr=0.05, clip_value=0.2), {}),
    ("adam", "Adam", dict(lr=0.05, weight_decay=0.01), {}),
    ("adam", "Adam", dict(lr=0.05, clip_norm=1.0), {}),
    ("rmsprop", "RMSprop", dict(lr=0.01, weight_decay=0.05), dict(alpha=0.9, eps=1e-8)),
    ("adagrad", "Adagrad", dict(lr=0.1, clip_norm=2.0), dict(eps=1e-8)),
], ids=lambda c: f"{c[0]}-{'-'.join(c[2])}")
def test_optimiser_options_match_torch(backend, case):
    name, torch_name, kw, torch_extra = case
    w0, xs, ys = _problem()
    clip = {k: kw[k] for k in ("clip_norm", "clip_value") if k in kw}
    torch_kw = {k: v for k, v in kw.items() if k not in clip}
    if name == "rmsprop":
        torch_kw.update(torch_extra)
    elif name == "adagrad":
        torch_kw.update(torch_extra)
    got, opt = _sg_run(getattr(sg.nn, name), w0, xs, ys, 6, backend, **kw)
    want = _torch_run(torch_name, w0, xs, ys, 6, **clip, **torch_kw)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert isinstance(opt, sg.nn.Optimizer) and isinstance(opt, list)


@pytest.mark.parametrize("sched, torch_sched", [
    (lambda: sg.nn.schedules.step_decay(0.1, step_size=2, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
    (lambda: sg.nn.schedules.exponential(0.1, gamma=0.8),
     lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    (lambda: sg.nn.schedules.cosine(0.1, total_steps=5, final_lr=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.01)),
], ids=["step", "exponential", "cosine"])
def test_schedules_match_torch(sched, torch_sched):
    w0, xs, ys = _problem()
    got, opt = _sg_run(sg.nn.sgd, w0, xs, ys, 5, lr=sched())
    want = _torch_run("SGD", w0, xs, ys, 5, sched=torch_sched, lr=0.1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert opt.state[0].get_value() == 5  # the step counter


def test_warmup_schedule_values():
    s = sg.nn.schedules.warmup(sg.nn.schedules.cosine(1.0, total_steps=10), steps=4)
    np.testing.assert_allclose([s(0), s(1)], [0.25, 0.5 * (0.5 + 0.5 * np.cos(np.pi * 0.1))])
    after = sg.nn.schedules.cosine(1.0, 10).value(np.arange(4, 20))
    np.testing.assert_allclose(s.value(np.arange(20))[4:], after)


def test_shared_learning_rate_changes_without_recompiling():
    w0, xs, ys = _problem()
    lr = sg.shared(np.float64(0.05), name="lr")
    w = sg.shared(w0.copy(), name="w")
    x, y = sg.matrix("x", "float64"), sg.matrix("y", "float64")
    loss = sg.mean(sg.square(x @ w - y))
    step = sg.compile([x, y], loss, updates=sg.nn.sgd(loss, [w], lr=lr))
    step(xs, ys)
    lr.set_value(np.float64(0.0))
    before = w.get_value()
    step(xs, ys)
    np.testing.assert_array_equal(w.get_value(), before)


def test_optimiser_state_dict_round_trip_is_all_or_nothing():
    w0, xs, ys = _problem()
    _, opt = _sg_run(sg.nn.adam, w0, xs, ys, 3, lr=0.1)
    saved = opt.state_dict()
    assert sorted(saved) == [f"adam:{i}" for i in range(3)]  # step, m, v
    assert saved["adam:0"] == 3  # the step counter
    before = [v.get_value() for v in opt.state]
    bad = dict(saved)
    bad[next(iter(bad))] = np.zeros((7, 7))
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    for v, b in zip(opt.state, before):
        np.testing.assert_array_equal(v.get_value(), b)


# --- loop helpers -----------------------------------------------------------------------------

def test_minibatches_cover_every_row_once():
    a, b = np.arange(10), np.arange(10) * 10
    batches = list(sg.nn.minibatches(a, b, batch_size=4, seed=0))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert sorted(np.concatenate([x for x, _ in batches])) == list(range(10))
    assert all(np.array_equal(x * 10, y) for x, y in batches)
    assert len(list(sg.nn.minibatches(a, batch_size=4, drop_last=True))) == 2
    with pytest.raises(ValueError, match="array 1 has 3 rows"):
        list(sg.nn.minibatches(a, np.arange(3), batch_size=2))


def test_early_stopping_restores_the_best_parameters():
    w = sg.shared(np.zeros(2), name="w")
    stop = sg.nn.EarlyStopping(patience=2, params=[w])
    results = []
    for k, v in enumerate([3.0, 2.0, 2.5, 2.4, 1.0]):
        w.set_value(np.full(2, float(k)))
        results.append(stop.step(v))
    assert results == [False, False, False, True, False]
    assert stop.best == 1.0 and stop.best_step == 4
    stop2 = sg.nn.EarlyStopping(patience=1, mode="max", params=[w])
    w.set_value(np.full(2, 7.0))
    stop2.step(0.9)
    w.set_value(np.full(2, 8.0))
    assert stop2.step(0.5)
    stop2.restore()
    np.testing.assert_array_equal(w.get_value(), [7.0, 7.0])


def test_metrics():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([1, 1, 1])
    assert sg.nn.accuracy(scores, labels) == pytest.approx(2 / 3)
    np.testing.assert_array_equal(sg.nn.confusion_matrix(scores, labels, 2), [[0, 0], [1, 2]])


def test_checkpoint_restores_training_in_a_fresh_process(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import symgraph as sg
        sg.seed(0)
        rng = np.random.default_rng(0)
        xs, ys = rng.standard_normal((16, 3)), rng.standard_normal((16, 1))
        model = sg.nn.Dense(3, 1, dtype="float64")
        x, y = sg.matrix("x", "float64"), sg.matrix("y", "float64")
        loss = sg.nn.mse(model(x), y)
        opt = sg.nn.adam(loss, model.params, lr=0.05)
        step = sg.compile([x, y], loss, updates=opt)
        path = {str(tmp_path / "ckpt.npz")!r}
        if sys.argv[1] == "first":
            for _ in range(3):
                step(xs, ys)
            sg.nn.save_checkpoint(path, model.params, opt, epoch=3)
            for _ in range(3):
                step(xs, ys)
        else:
            extra = sg.nn.load_checkpoint(path, model.params, opt)
            assert extra == {{"epoch": 3}}, extra
            for _ in range(3):
                step(xs, ys)
        print(repr(model.w.get_value().ravel().tolist()))
    """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SYMGRAPH_CACHE_DIR": "off"}
    run = lambda arg: subprocess.run([sys.executable, "-c", script, arg], capture_output=True,
                                     text=True, cwd=ROOT, timeout=300, env=env)
    first, second = run("first"), run("second")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout


def test_checkpoint_keys_do_not_depend_on_automatic_names(tmp_path):
    first = sg.nn.Dense(3, 2, dtype="float64")
    sg.nn.save_checkpoint(tmp_path / "c.npz", first.params)
    sg.nn.Dense(5, 5)  # another layer shifts the automatic numbering
    second = sg.nn.Dense(3, 2, dtype="float64")
    assert second.name != first.name
    sg.nn.load_checkpoint(tmp_path / "c.npz", second.params)
    np.testing.assert_array_equal(second.w.get_value(), first.w.get_value())


def test_checkpoint_with_wrong_shapes_changes_nothing(tmp_path):
    a, b = sg.shared(np.ones(3), name="a"), sg.shared(np.ones(2), name="b")
    sg.nn.save_checkpoint(tmp_path / "c.npz", [a, b])
    a2, b2 = sg.shared(np.zeros(3), name="a"), sg.shared(np.zeros(4), name="b")
    with pytest.raises(ValueError, match="'b' has shape"):
        sg.nn.load_checkpoint(tmp_path / "c.npz", [a2, b2])
    np.testing.assert_array_equal(a2.get_value(), np.zeros(3))


def test_variable_eval_and_summary():
    x = sg.vector("x", "float64")
    y = sg.exp(x).sum()
    assert y.eval({x: np.zeros(3)}) == 3.0
    assert y.eval({x: np.zeros(5)}) == 5.0
    assert len(y._eval_functions) == 1  # compiled once
    w = sg.shared(np.zeros((3, 4), np.float32), name="w")
    assert "total: 12" in sg.nn.summary([w])


def test_flatten_takes_unknown_dims_and_an_empty_batch():
    x = sg.tensor("x", (None, 3, None, 2))
    f = sg.compile([x], sg.nn.Flatten()(x))
    for shape in [(2, 3, 4, 2), (0, 3, 1, 2), (5, 3, 2, 2)]:
        a = np.random.default_rng(0).random(shape).astype("float32")
        np.testing.assert_array_equal(f(a), a.reshape(shape[0], int(np.prod(shape[1:]))))
    assert str(sg.nn.Flatten()(sg.tensor("y", (None, 3, 4, 2))).type) == "float32[?, 24]"
