"""Maps the repository-root cli.py to the installed module cips_edge.cli (pyproject maps the rest).

Editable installs need setuptools' strict mode for this mapping:
    pip install -e ".[cpu,train,dev]" --config-settings editable_mode=strict
"""
from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def finalize_options(self):
        super().finalize_options()
        self.py_modules = ["cips_edge.cli"]

    def find_modules(self):
        return [("cips_edge", "cli", "cli.py")]


setup(cmdclass={"build_py": BuildPy})
