"""Code generation: the backend-neutral kernel IR, lowering, and the LLVM / CUDA renderers."""
