"""Where the paying key comes from: an environment variable, a key file, or an encrypted keystore.

Exactly one source may be configured:

- ``X402_PRIVATE_KEY``: the 0x-hex key itself;
- ``X402_KEY_FILE``: a file holding the hex key, readable by its owner only (``chmod 600``);
- ``X402_KEYSTORE`` + ``X402_KEYSTORE_PASSWORD``: an eth-account / Web3 Secret Storage JSON keystore.

The key is never printed, logged, quoted in an error message or written anywhere except an
encrypted keystore; error messages name the variable or file at fault, never the key or password,
and are raised ``from None`` so no underlying exception (which might quote file content) is chained.
eth-account (about half a second to import) is imported only when a keystore is read or written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from x402_mcp.payments.signer import KeyFormatError, check_private_key, new_private_key

__all__ = ["KeySourceError", "create_keystore", "default_keystore_path", "resolve_private_key"]

log = logging.getLogger(__name__)

KEYSTORE_FILENAME = "keystore.json"
_MAX_KEY_FILE_BYTES = 4096  # a hex key with whitespace is ~66 bytes; anything large is not a key file
_MAX_KEYSTORE_BYTES = 1 << 20
_NOT_JSON = object()


class KeySourceError(ValueError):
    """The key source is misconfigured. Messages name the variable or file, never the key or password."""


def _on_windows() -> bool:
    return os.name == "nt"


def _given(value: str | None) -> bool:
    """An empty or blank variable counts as not set (``X402_PRIVATE_KEY=`` in a .env file)."""
    return value is not None and value.strip() != ""


def default_keystore_path(data_dir: Path) -> Path:
    """Where ``create_keystore`` puts the keystore unless told otherwise."""
    return Path(data_dir) / KEYSTORE_FILENAME


def resolve_private_key(
    *,
    private_key: str | None,
    key_file: Path | None,
    keystore: Path | None,
    keystore_password: str | None,
) -> str | None:
    """The 0x-hex key from exactly one source, or None if none is configured.

    Raises `KeySourceError` when more than one source is set, when ``X402_KEYSTORE_PASSWORD`` is
    set without ``X402_KEYSTORE`` (or the reverse), or when the configured source is unusable.
    """
    given = [
        name
        for name, value in (
            ("X402_PRIVATE_KEY", private_key if _given(private_key) else None),
            ("X402_KEY_FILE", key_file),
            ("X402_KEYSTORE", keystore),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise KeySourceError(f"{' and '.join(given)} are set: set only one of {', '.join(given)}")
    if keystore is None and _given(keystore_password):
        raise KeySourceError("X402_KEYSTORE_PASSWORD is set but X402_KEYSTORE is not: set both, or neither")

    if private_key is not None and _given(private_key):
        try:
            return check_private_key(private_key)
        except KeyFormatError as exc:
            raise KeySourceError(str(exc)) from None
    if key_file is not None:
        return _read_key_file(Path(key_file))
    if keystore is not None:
        if keystore_password is None or keystore_password == "":
            raise KeySourceError(
                f"X402_KEYSTORE is set ({keystore}) but X402_KEYSTORE_PASSWORD is not: "
                "set X402_KEYSTORE_PASSWORD to the keystore's password"
            )
        return _decrypt_keystore(Path(keystore), keystore_password)
    return None


# --- X402_KEY_FILE ---------------------------------------------------------------------------------


def _check_key_file_stat(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise KeySourceError(f"X402_KEY_FILE {path} is {kind}: point it at a file holding the hex key")
    if _on_windows():
        return
    loose = st.st_mode & 0o077
    if loose:
        who = " and ".join(label for label, bits in (("group", 0o070), ("others", 0o007)) if loose & bits)
        raise KeySourceError(
            f"X402_KEY_FILE {path} is accessible by {who} (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"a key file must be readable by its owner only; fix with `chmod 600 {path}`"
        )


def _read_key_file(path: Path) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeySourceError(f"X402_KEY_FILE {path} does not exist") from None
    except OSError as exc:
        raise KeySourceError(f"X402_KEY_FILE {path} cannot be read: {exc.strerror}") from None
    _check_key_file_stat(path, st)

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise KeySourceError(f"X402_KEY_FILE {path} cannot be read: {exc.strerror}") from None
    try:
        _check_key_file_stat(path, os.fstat(fd))  # the file opened is the file checked
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)

    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise KeySourceError(f"X402_KEY_FILE {path} is too large to be a key file (expected one hex key)")
    # Raised outside the `except`: a UnicodeDecodeError carries the bytes (the key) in `.object`,
    # and even a suppressed context stays reachable as `__context__`.
    text: str | None = None
    with contextlib.suppress(UnicodeDecodeError):
        text = raw.decode("utf-8-sig")
    if text is None:
        raise KeySourceError(f"X402_KEY_FILE {path} is not text: it must hold one hex key")
    if text.lstrip().startswith("{"):
        raise KeySourceError(
            f"X402_KEY_FILE {path} looks like a JSON keystore: use X402_KEYSTORE and "
            "X402_KEYSTORE_PASSWORD for encrypted keystores"
        )
    try:
        return check_private_key(text)
    except KeyFormatError as exc:
        raise KeySourceError(str(exc).replace("X402_PRIVATE_KEY", f"the content of X402_KEY_FILE {path}")) from None


# --- X402_KEYSTORE ---------------------------------------------------------------------------------


def _load_keystore_json(path: Path) -> dict[str, Any]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeySourceError(f"X402_KEYSTORE {path} does not exist") from None
    except OSError as exc:
        raise KeySourceError(f"X402_KEYSTORE {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeySourceError(f"X402_KEYSTORE {path} is not a regular file")
    if st.st_size > _MAX_KEYSTORE_BYTES:
        raise KeySourceError(f"X402_KEYSTORE {path} is too large to be a keystore")
    if not _on_windows() and st.st_mode & 0o077:
        # Encrypted, so not refused; but the password is all that protects it.
        log.warning("X402_KEYSTORE %s is readable by group or others; consider `chmod 600 %s`", path, path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeySourceError(f"X402_KEYSTORE {path} cannot be read: {exc.strerror}") from None
    # Raised outside the `except`: JSONDecodeError keeps the whole document in `.doc`, which is
    # the plain key if X402_KEYSTORE points at a key file by mistake.
    data: Any = _NOT_JSON
    with contextlib.suppress(ValueError):  # JSONDecodeError, UnicodeDecodeError
        data = json.loads(raw)
    del raw
    if data is _NOT_JSON:
        raise KeySourceError(f"X402_KEYSTORE {path} is not a JSON keystore (not valid JSON)")
    if (
        not isinstance(data, dict)
        or data.get("version") not in (3, 4)
        or not isinstance(data.get("crypto", data.get("Crypto")), dict)
    ):
        raise KeySourceError(
            f"X402_KEYSTORE {path} is not an encrypted keystore "
            "(expected Web3 Secret Storage JSON with 'version' and 'crypto')"
        )
    return data


def _decrypt_keystore(path: Path, password: str) -> str:
    data = _load_keystore_json(path)
    from eth_account import Account

    try:
        raw = bytes(Account.decrypt(data, password))
    except Exception as exc:  # eth-keyfile raises KeyError/TypeError/ValueError for malformed files
        if "MAC mismatch" in str(exc):
            raise KeySourceError(
                f"X402_KEYSTORE_PASSWORD does not decrypt the keystore {path} (wrong password?)"
            ) from None
        raise KeySourceError(
            f"X402_KEYSTORE {path} is not a usable keystore (malformed or unsupported: {type(exc).__name__})"
        ) from None
    if len(raw) != 32:
        raise KeySourceError(f"X402_KEYSTORE {path} does not hold a 32-byte private key")
    try:
        return check_private_key(raw.hex())
    except KeyFormatError:
        raise KeySourceError(f"X402_KEYSTORE {path} does not hold a valid secp256k1 private key") from None


# --- creating a keystore ---------------------------------------------------------------------------


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents with mode 0700; existing directories are left alone."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for new_dir in reversed(missing):
        try:
            os.mkdir(new_dir, 0o700)
        except FileExistsError:
            continue
        if not _on_windows():
            os.chmod(new_dir, 0o700)  # exactly 0700, whatever the umask


def _fsync_dir(directory: Path) -> None:
    if _on_windows():
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_keystore(path: Path, password: str, *, private_key: str | None = None, _scrypt_n: int | None = None) -> str:
    """Write a new encrypted keystore at `path` and return the checksummed address it holds.

    The key is `private_key` if given, else a fresh random one. The file is created with mode
    0600 (missing parent directories with 0700), written to a temporary file in the same
    directory and moved into place atomically; an existing file is never overwritten.
    `_scrypt_n` is for tests only (a cheap scrypt work factor); None keeps eth-account's default.
    """
    path = Path(path)
    if not password:
        raise KeySourceError(f"refusing to create keystore {path} with an empty password")
    if private_key is None:
        key = new_private_key()
    else:
        try:
            key = check_private_key(private_key)
        except KeyFormatError:
            raise KeySourceError(
                "the private key to store is not a valid secp256k1 key (64 hex characters, optionally 0x-prefixed)"
            ) from None
    if os.path.lexists(path):
        raise KeySourceError(f"refusing to overwrite existing file {path}")

    from eth_account import Account

    encrypted = Account.encrypt(bytes.fromhex(key[2:]), password, kdf="scrypt", iterations=_scrypt_n)
    payload = (json.dumps(encrypted, indent=2) + "\n").encode("utf-8")
    address = str(Account.from_key(key).address)

    directory = path.parent
    _make_private_dirs(directory)
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            if not _on_windows():
                os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        _move_into_place(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)
    return address


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` atomically without replacing an existing `path`.

    A hard link fails if `path` exists, so a file created since the check above is never
    clobbered; on filesystems without hard links, fall back to check-then-`os.replace`.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeySourceError(f"refusing to overwrite existing file {path}") from None
    except OSError:
        if os.path.lexists(path):
            raise KeySourceError(f"refusing to overwrite existing file {path}") from None
        os.replace(tmp, path)
