"""Builds the optional compiled request path of the SDK (malti_sdk/_speedups.c).

Everything else is in pyproject.toml. Without a C compiler (or off POSIX) the build
goes on without it, and the middleware runs its pure-Python path: same records, more CPU.
"""

import os

from setuptools import Extension, setup

extensions = []
if os.name == "posix" and os.environ.get("MALTI_SPEEDUPS", "1") != "0":
    extensions.append(Extension("malti_sdk._speedups", ["malti_sdk/_speedups.c"], optional=True))

setup(ext_modules=extensions)
