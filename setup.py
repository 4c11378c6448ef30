"""Builds the optional compiled request path of the SDK (malti_sdk/_speedups.c).

Everything else is in pyproject.toml. Without a C compiler and the Python headers the
build goes on without it, and the middleware runs its pure-Python path: the same records,
more CPU. ``MALTI_SPEEDUPS=0`` is a switch read when the SDK is imported, not here.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("malti_sdk._speedups", ["malti_sdk/_speedups.c"], optional=True)])
