"""Ed25519 keys: ids, the text form ISPs pin, and private key files.

- Key id: the first 8 bytes of SHA-256 of the 32-byte raw public key. It only selects a key; the
  signature is what proves anything, so a collision can cause a refusal, never an acceptance.
- Text form: ``"ed25519:" + base64(raw)`` (standard alphabet, padded), one line. This is the string
  an ISP pins in its TOML config and the ``key`` field of certificates.
- Private key files: PKCS#8 PEM (optionally passphrase-encrypted), mode 0600, written atomically.
  A key file readable by group or others is refused on load, as ssh does: a signing key that other
  accounts could have copied must not be trusted to sign.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from hashlib import sha256
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signing.errors import KeyFileError

PrivateKey = Ed25519PrivateKey

PUBLIC_KEY_SIZE = 32
KEY_ID_SIZE = 8
PUBLIC_KEY_PREFIX = "ed25519:"
# A PEM Ed25519 key is ~120 bytes (~250 encrypted); anything far larger is not a key file.
_MAX_KEY_FILE_SIZE = 64 * 1024

StrPath = str | os.PathLike[str]


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the OS CSPRNG."""
    return Ed25519PrivateKey.generate()


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32 raw public key bytes of a private or public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_raw(raw: bytes) -> bytes:
    if not isinstance(raw, bytes | bytearray | memoryview) or len(raw) != PUBLIC_KEY_SIZE:
        size = len(raw) if isinstance(raw, bytes | bytearray | memoryview) else type(raw).__name__
        raise KeyFileError(
            "bad_public_key", f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes, got {size}"
        )
    return bytes(raw)


def key_id(public_key_raw: bytes) -> bytes:
    """First 8 bytes of SHA-256 of the raw public key."""
    return sha256(_check_raw(public_key_raw)).digest()[:KEY_ID_SIZE]


def key_id_hex(public_key_raw: bytes) -> str:
    """Key id in lowercase hex, for messages and logs."""
    return key_id(public_key_raw).hex()


def format_public_key(raw: bytes) -> str:
    """Text form ``ed25519:<base64>`` of a raw public key."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(_check_raw(raw)).decode("ascii")


def parse_public_key(text: str) -> bytes:
    """Raw public key from its text form; KeyFileError("bad_public_key") on any other form."""
    if not isinstance(text, str):
        raise KeyFileError("bad_public_key", f"public key must be text, got {type(text).__name__}")
    text = text.strip()
    shown = text if len(text) <= 80 else text[:77] + "..."
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise KeyFileError(
            "bad_public_key", f"public key {shown!r} does not start with {PUBLIC_KEY_PREFIX!r}"
        )
    body = text[len(PUBLIC_KEY_PREFIX) :]
    try:
        raw = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise KeyFileError("bad_public_key", f"public key {shown!r} is not valid base64") from None
    if len(raw) != PUBLIC_KEY_SIZE:
        raise KeyFileError(
            "bad_public_key",
            f"public key {shown!r} decodes to {len(raw)} bytes, expected {PUBLIC_KEY_SIZE}",
        )
    # One key, one spelling: refuse non-canonical base64 (stray padding bits) so pinned strings
    # compare equal exactly when the keys are equal.
    if base64.b64encode(raw).decode("ascii") != body:
        raise KeyFileError("bad_public_key", f"public key {shown!r} is not canonical base64")
    return raw


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems cannot open or fsync a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write `data` to `path` via a same-directory temp file created with `mode` from the start."""
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: never reuse a file someone else created (it could have looser permissions).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            os.fchmod(fd, mode)  # umask can only remove bits; set exactly what we mean
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target exists: no window where a concurrent writer is clobbered.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyFileError(
                    "exists", f"{path} already exists; refusing to overwrite it"
                ) from None
            except OSError:
                # Filesystem without hard links: check-then-rename (a small race, still no
                # partial file and no loose permissions).
                if path.exists():
                    raise KeyFileError(
                        "exists", f"{path} already exists; refusing to overwrite it"
                    ) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _passphrase_bytes(passphrase: bytes | str | None) -> bytes | None:
    if passphrase is None:
        return None
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)


def save_private_key(
    path: StrPath,
    key: Ed25519PrivateKey,
    passphrase: bytes | str | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Write `key` as PKCS#8 PEM to `path`, mode 0600, atomically.

    Refuses (KeyFileError "exists") to replace an existing file unless `overwrite` is true.
    """
    secret = _passphrase_bytes(passphrase)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _atomic_write(Path(path), pem, 0o600, overwrite)


def _read_bounded(path: Path, *, private: bool) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO planted at the key path must not hang the process.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise KeyFileError("missing", f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError("bad_key_file", f"cannot open key file {path}: {exc}") from None
    try:
        # fstat on the open descriptor: the mode checked is the mode of the file actually read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError("bad_key_file", f"key file {path} is not a regular file")
        perms = stat.S_IMODE(st.st_mode)
        if private and perms & 0o077:
            raise KeyFileError(
                "insecure_permissions",
                f"private key file {path} has mode {perms:04o}; it must not be accessible to "
                f"group or others (run: chmod 600 {path})",
            )
        if st.st_size > _MAX_KEY_FILE_SIZE:
            raise KeyFileError(
                "bad_key_file", f"key file {path} is {st.st_size} bytes; not a key file"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_MAX_KEY_FILE_SIZE + 1)
        if len(data) > _MAX_KEY_FILE_SIZE:
            raise KeyFileError("bad_key_file", f"key file {path} is too large to be a key file")
        return data
    finally:
        os.close(fd)


def load_private_key(path: StrPath, passphrase: bytes | str | None = None) -> Ed25519PrivateKey:
    """Read an Ed25519 PKCS#8 PEM private key file (mode 0600 or stricter)."""
    path = Path(path)
    data = _read_bounded(path, private=True)
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase_bytes(passphrase))
    except TypeError:
        # cryptography signals a missing (or unneeded) passphrase with TypeError.
        hint = "needs a passphrase" if passphrase is None else "is not encrypted; omit passphrase"
        raise KeyFileError("bad_key_file", f"private key file {path} {hint}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            "bad_key_file",
            f"{path} is not a readable PKCS#8 PEM private key (corrupt, or wrong passphrase)",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            "bad_key_file", f"{path} holds a {type(key).__name__}, not an Ed25519 private key"
        )
    return key


def save_public_key(path: StrPath, raw: bytes, *, overwrite: bool = False) -> None:
    """Write the text form of a public key as one line, mode 0644, atomically."""
    _atomic_write(Path(path), (format_public_key(raw) + "\n").encode("ascii"), 0o644, overwrite)


def load_public_key(path: StrPath) -> bytes:
    """Raw public key from a file holding its text form."""
    path = Path(path)
    data = _read_bounded(path, private=False)
    try:
        return parse_public_key(data.decode("ascii"))
    except (UnicodeDecodeError, KeyFileError) as exc:
        detail = exc.message if isinstance(exc, KeyFileError) else "not ASCII text"
        raise KeyFileError("bad_key_file", f"public key file {path}: {detail}") from None
