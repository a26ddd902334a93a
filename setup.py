"""The C extensions only (everything else is in pyproject.toml): the module parser's hot path
(formats/_modfast.c) and the JSON indenter (cli/_jsonindent.c). Optional: without a compiler
kabigate installs and does both in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(name, [source], extra_compile_args=["-O2", "-Wall", "-Wextra"], optional=True)
                   for name, source in (("kabigate.formats._modfast", "src/kabigate/formats/_modfast.c"),
                                        ("kabigate.cli._jsonindent", "src/kabigate/cli/_jsonindent.c"))])
