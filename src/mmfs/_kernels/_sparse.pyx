# cython: freethreading_compatible = True
"""Sparse CSR kernels (placeholder until the sparse kernels land)."""
