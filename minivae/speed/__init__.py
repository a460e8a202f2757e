"""What makes minivae fast, kept apart from the mathematics, which reads the same without it.

- :mod:`~minivae.speed.blas`: how many BLAS threads a matrix product may use, chosen by its shape.
- :mod:`~minivae.speed.fused`: the optimisers' updates compiled into one pass (the ``fast`` extra, numba).
- :mod:`~minivae.speed.gpu_kernels`: the same updates as one CUDA kernel each, on CuPy.
- :mod:`~minivae.speed.chunks`: element-wise work over one long vector in cache-sized chunks.
- :mod:`~minivae.speed.noise`: the training noise, drawn one step ahead on a helper thread on a GPU.

``MINIVAE_FAST=0`` turns the compiled paths off; the NumPy code in :mod:`minivae.optim` and
:mod:`minivae.backend` is the reference they are tested against.
"""
