"""The wheel's one addition to pyproject.toml: the native apply core inside it, when asked for.

`CRONRAFT_NATIVE_WHEEL=1 pip wheel --no-build-isolation .` (with mypy and gcc in the building environment:
the container image's build stage, deploy/docker/Dockerfile) compiles the native apply core
(scripts/native.py build --required: an error, not a pure wheel, when it cannot) and puts its folder,
`cronraft/_native_build/` with its stamp, into the wheel, tagged for this interpreter and platform. The
installed package then loads it as a checkout does (cronraft/_native.py): the stamp is the digest of the
sources it was built from, which the wheel installs byte for byte. Without the variable the wheel is pure
Python and platform-independent, as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

NATIVE = os.environ.get("CRONRAFT_NATIVE_WHEEL") == "1"
ROOT = Path(__file__).resolve().parent


class BuildWithNative(build_py):
    def run(self) -> None:
        super().run()
        if not NATIVE:
            return
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "native.py"), "build", "--required"], check=True
        )
        target = Path(self.build_lib) / "cronraft" / "_native_build"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "cronraft" / "_native_build", target)


class NativeDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # a platform wheel (cp311-cp311-linux_x86_64) when it carries C
        return NATIVE


setup(cmdclass={"build_py": BuildWithNative}, distclass=NativeDistribution)
