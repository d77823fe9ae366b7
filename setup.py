"""Build of the resolver's optional C fast path (resolver/_fastpath.c); metadata is in pyproject.

The extension is optional: without a C compiler or the Python headers the install still
succeeds, and `resolver serve` runs the pure-Python path and says so loudly at start-up.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "resolver._fastpath",
            sources=["resolver/_fastpath.c"],
            depends=["resolver/_ratelimit.h", "resolver/_proxy.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
