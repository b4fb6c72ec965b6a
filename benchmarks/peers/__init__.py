"""One module per peer.  Each has ``available()`` and ``build(workload, data, sizes, threads,
options)`` returning a Runner: ``call()`` does one unit of work and returns a handle,
``block(handle)`` waits for asynchronous work, ``outputs(handle)`` gives NumPy arrays to check:
``[y]`` (W1f), ``[dx]`` (W1b), ``[loss, dlogits]`` (W6) and ``[loss, *params]`` after the step
for the training workloads."""

PEERS = ["numpy", "symgraph", "pytensor-numba", "pytensor-c", "jax", "torch", "torch.compile"]

MODULES = {
    "numpy": "benchmarks.peers.numpy_peer",
    "symgraph": "benchmarks.peers.symgraph_peer",
    "pytensor-numba": "benchmarks.peers.pytensor_peer",
    "pytensor-c": "benchmarks.peers.pytensor_peer",
    "jax": "benchmarks.peers.jax_peer",
    "torch": "benchmarks.peers.torch_peer",
    "torch.compile": "benchmarks.peers.torch_peer",
}

# the package each peer needs (checked with importlib.util.find_spec in the worker's Python)
PACKAGES = {"numpy": "numpy", "symgraph": "symgraph", "pytensor-numba": "pytensor",
            "pytensor-c": "pytensor", "jax": "jax", "torch": "torch", "torch.compile": "torch"}
