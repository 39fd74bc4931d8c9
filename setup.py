"""The optional C accelerator of talos/record (everything else is in pyproject.toml).

``optional=True``: a machine without a C compiler or Python headers still
installs Talos; talos.record then uses its pure-Python codec.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "talos.record._native",
            ["talos/record/_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
