"""The C extension only (everything else is in pyproject.toml): the module parser's hot path,
formats/_modfast.c. Optional: without a compiler kabigate installs and reads modules in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("kabigate.formats._modfast", ["src/kabigate/formats/_modfast.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra"], optional=True)])
