"""The optional C extension ``loom_samplers._randn`` (torch.randn's float32 CPU draws, faster).

Everything else is in pyproject.toml. Where the extension cannot be built (no C compiler)
the install still succeeds and the Brownian tree draws with torch.
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off"]
setup(
    ext_modules=[
        Extension(
            "loom_samplers._randn",
            ["src/loom_samplers/_randn.c"],
            depends=["src/loom_samplers/randn_kernels.h"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
