"""Compiled FM kernels (Cython, nogil). Private: the estimators are the public API."""
