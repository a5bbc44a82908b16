"""Build the compiled parts of nnrconv; all metadata lives in pyproject.toml."""

from setuptools import setup

# The DeepCABAC core (nnrconv/nnc/_cabac) is added here once its sources land.
EXTENSIONS: list = []

setup(ext_modules=EXTENSIONS)
