"""The one compiled part: `archiverd.formats._scan` (see its C source), optional.

Built wherever a C compiler and Python's headers are present; where they are not, the
install goes on without it and the scanner counts with `bytes.count` instead (slower, the
same results). Everything else is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "archiverd.formats._scan",
            sources=["archiverd/formats/_scan.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
