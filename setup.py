"""One build step pyproject.toml cannot express: ship images/ inside the package.

The repository keeps the agent images' build contexts in a top-level ``images/`` folder (one
folder per image), and that folder stays the only copy. A wheel has no top level of its own, so
``build_py`` copies every file of ``images/`` to ``launcher/_images/`` in the build directory;
``launcher image build`` finds them there with importlib.resources. An editable install copies
nothing (``pip install -e .`` maps the package onto the checkout) and launcher reads ``images/``
of the checkout instead. The sdist carries ``images/`` through MANIFEST.in, so a wheel built from it
gets the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
TARGET = ("launcher", "_images")  # in the built package: launcher/_images/<image>/...


def image_files() -> list[Path]:
    """Every file of images/, relative to it; symlinks are refused (a build context is copied as is)."""
    if not IMAGES.is_dir():
        raise SystemExit(f"setup.py: {IMAGES} is missing; a wheel without the images cannot build them")
    files = []
    for path in sorted(IMAGES.rglob("*")):
        if path.is_symlink():
            raise SystemExit(f"setup.py: {path} is a symlink; images/ must hold regular files only")
        if path.is_file() and "__pycache__" not in path.parts:
            files.append(path.relative_to(IMAGES))
    if not any(f.name == "Dockerfile" for f in files):
        raise SystemExit(f"setup.py: no Dockerfile under {IMAGES}")
    return files


class BuildPyWithImages(build_py):
    """build_py, plus images/ copied to launcher/_images/ (not in editable mode: see above)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for relative, target in self._image_outputs():
            self.mkpath(os.path.dirname(target))
            self.copy_file(str(IMAGES / relative), target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs.extend(target for _, target in self._image_outputs())
        return outputs

    def _image_outputs(self) -> list[tuple[Path, str]]:
        base = os.path.join(self.build_lib, *TARGET)
        return [(relative, os.path.join(base, *relative.parts)) for relative in image_files()]


setup(cmdclass={"build_py": BuildPyWithImages})
