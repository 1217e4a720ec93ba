"""Name a weights file for what it is before torch or safetensors read it (torch-free).

Users hand the studio files that are not weights more often than broken weights: a git-LFS pointer cloned
without ``git lfs pull``, an HTML login or error page saved under the weights' name, a download cut short, an
empty file, a pickle carrying Python objects. :func:`check_weights_file` reads the first bytes (and, for
safetensors, the header) and raises :class:`~pipelines.types.CheckpointError` with one plain sentence naming the
file; :func:`explain_load_error` turns what ``torch.load(weights_only=True)`` raises for a pickle that holds
more than tensors into the same kind of sentence (the pickle's code never runs: torch refuses it first). The
loaders, the command lines and the tabs all show these words.
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import struct
import zipfile
from pathlib import Path

from pipelines.types import CheckpointError

LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_HTML = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body|<\?xml)", re.IGNORECASE)
_UNSUPPORTED_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL ([\w.]+)")
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit


def check_weights_file(path: str | os.PathLike) -> None:
    """Raise CheckpointError naming ``path`` when it is not a complete weights file; return quietly otherwise."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name}: the file is empty (0 bytes): the download or copy did not finish")
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if head.startswith(LFS_POINTER):
        oid = re.search(rb"oid sha256:([0-9a-f]{12})", head)
        raise CheckpointError(
            f"{path.name}: the file is a git-LFS pointer ({size} bytes), not the weights: fetch the real file "
            f"(`git lfs pull` in its repository, or download it from the hub)"
            + (f" [object {oid.group(1).decode()}…]" if oid else "")
        )
    if _HTML.match(head):
        raise CheckpointError(
            f"{path.name}: the file is an HTML page ({size} bytes), not weights: a login or error page was saved "
            "in its place; download the file again (log in first for gated models)"
        )
    if path.suffix == ".safetensors":
        _check_safetensors(path, size)
    elif head.startswith(b"PK\x03\x04"):  # torch's zip format (.pt/.bin/.pth since torch 1.6)
        _check_zip(path, size)


def _check_safetensors(path: Path, size: int) -> None:
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path.name}: the file is truncated ({size} bytes): download it again")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > MAX_SAFETENSORS_HEADER:
            raise CheckpointError(f"{path.name}: not a safetensors file (no valid header): was it renamed?")
        if 8 + header_size > size:
            raise CheckpointError(f"{path.name}: the file is truncated ({size} bytes, its header alone needs "
                                  f"{8 + header_size}): download it again")
        try:
            header = json.loads(handle.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path.name}: not a safetensors file (its header is not JSON: {error})") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: not a safetensors file (its header is not a table of tensors)")
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2]
    needed = 8 + header_size + max(ends, default=0)
    if needed > size:
        raise CheckpointError(f"{path.name}: the file is truncated ({size} of {needed} bytes): download it again")


def _check_zip(path: Path, size: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path.name}: the file is truncated or damaged ({size} bytes; {error}): "
                              "download it again") from error


TENSOR_MODULES = ("torch", "collections", "numpy", "_codecs")  # what tensor checkpoints pickle


def foreign_globals(path: Path) -> list[str]:
    """The ``module.name`` globals a pickle (or torch's zip of one) would import beyond tensor plumbing, read
    opcode by opcode with :mod:`pickletools` -- nothing is unpickled, nothing runs."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile):
        return []
    found, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a damaged pickle: keep what was read before the damage
        pass
    return [name for name in dict.fromkeys(found) if not name.startswith(TENSOR_MODULES)]


def explain_load_error(path: str | os.PathLike, error: BaseException) -> CheckpointError:
    """The sentence for an exception of ``torch.load(weights_only=True)`` / safetensors on ``path``."""
    name = Path(path).name
    text = str(error)
    if "Weights only load failed" in text:  # torch's weights-only unpickler stopped
        found = _UNSUPPORTED_GLOBAL.search(text)
        culprit = found.group(1) if found else next(iter(foreign_globals(Path(path))), None)
        if culprit:
            return CheckpointError(f"{name}: refused: the file holds Python objects ({culprit}), not only "
                                   "tensors; it was not run. Use a .safetensors file or a plain tensor checkpoint")
        return CheckpointError(f"{name}: the file is damaged or not a checkpoint (its pickle cannot be read as "
                               "tensors): download it again")
    if isinstance(error, EOFError) or any(sign in text for sign in ("failed finding central directory",
                                                                    "unexpected EOF", "file might be corrupted")):
        return CheckpointError(f"{name}: the file is truncated or damaged: download it again")
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return CheckpointError(f"{name}: cannot read checkpoint ({type(error).__name__}: {first_line[:300]})")
