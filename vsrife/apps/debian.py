"""Files out of Debian packages (``apt-get download``, then only the named member is extracted; nothing is
installed): some of the sample clips ship in Debian packages."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..download import CHUNK, TIMEOUT_S, atomic_target, cache_dir, check_file
from ..errors import DownloadError


def fetch_member(source: str, target: Path, sha256: str | None, size: int | None, timeout: float = TIMEOUT_S) -> Path:
    """One file out of a Debian package fetched with ``apt-get download`` (the package is not kept)."""
    spec, _, member = source.removeprefix("deb:").partition("#")
    scratch = cache_dir() / "debs"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        try:
            subprocess.run(
                ["apt-get", "download", spec], cwd=folder, check=True, capture_output=True, timeout=max(timeout, 600)
            )
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            raise DownloadError(
                f"{source}: apt-get download failed ({detail.decode(errors='replace').strip() or e}); "
                "on Debian, run `apt-get update` first"
            ) from None
        deb = next(Path(folder).glob("*.deb"))
        with atomic_target(target) as tmp:
            _extract_from_deb(deb, member, tmp, source)
            check_file(tmp, sha256, size, source)
    return target


def _extract_from_deb(deb: Path, member: str, out_path: Path, source: str) -> None:
    wanted = "." + member if member.startswith("/") else "./" + member
    # stderr silenced: dpkg-deb complains when the reading stops early, as it does once the file is found
    with (
        subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as unpack,
        tarfile.open(fileobj=unpack.stdout, mode="r|") as archive,
    ):
        for entry in archive:
            if entry.name == wanted and entry.isfile():
                with archive.extractfile(entry) as src, open(out_path, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                return
    raise DownloadError(f"{source}: the package holds no {member}")
