"""The optional C extensions (everything else is in pyproject.toml): the record
codec (talos/record/_native.c) and the producer's send lane (talos/client/_send_lane.c).

``optional=True``: a machine without a C compiler or Python headers still
installs Talos; talos.record then uses its pure-Python codec and the producer
its pure-Python send().
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "talos.record._native",
            ["talos/record/_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "talos.client._send_lane",
            ["talos/client/_send_lane.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
