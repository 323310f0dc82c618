"""Key sources: X402_PRIVATE_KEY, X402_KEY_FILE, X402_KEYSTORE(+_PASSWORD), and create_keystore."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from x402_mcp.payments import keys
from x402_mcp.payments.keys import (
    KeySourceError,
    create_keystore,
    default_keystore_path,
    resolve_private_key,
)
from x402_mcp.payments.signer import Wallet, check_private_key, new_private_key

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")

PASSWORD = "correct horse battery staple"
FAST = 2**4  # scrypt work factor for tests; production uses eth-account's default (2**18)


@pytest.fixture(scope="module")
def key() -> str:
    return new_private_key()


@pytest.fixture(scope="module")
def address(key: str) -> str:
    return Wallet(key).address


def resolve(**given: Any) -> str | None:
    args: dict[str, Any] = {
        "private_key": None,
        "key_file": None,
        "keystore": None,
        "keystore_password": None,
    }
    args.update(given)
    return resolve_private_key(**args)


def write_key_file(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fast_keystore(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "ks" / "keystore.json"
    create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST)
    return path


@pytest.fixture(scope="module")
def default_kdf_keystore(tmp_path_factory: pytest.TempPathFactory, key: str) -> Iterator[tuple[Path, str]]:
    """One keystore with the production KDF settings, shared: scrypt at n=2**18 takes ~1 s per use."""
    path = tmp_path_factory.mktemp("default-kdf") / "wallet" / "keystore.json"
    yield path, create_keystore(path, PASSWORD, private_key=key)


# --- no source, X402_PRIVATE_KEY -------------------------------------------------------------------


def test_no_source_configured_gives_none() -> None:
    assert resolve() is None
    assert resolve(private_key="") is None
    assert resolve(private_key="  \n") is None


@pytest.mark.parametrize("form", ["as-is", "no-prefix", "upper", "padded"])
def test_private_key_source(key: str, address: str, form: str) -> None:
    given = {
        "as-is": key,
        "no-prefix": key[2:],
        "upper": "0x" + key[2:].upper(),
        "padded": f"  {key}\n",
    }[form]
    resolved = resolve(private_key=given)
    assert resolved == key
    assert Wallet(resolved).address == address


def test_bad_private_key_is_refused_without_quoting_it(key: str) -> None:
    bad = key[:-1] + "g"
    with pytest.raises(KeySourceError, match="X402_PRIVATE_KEY") as info:
        resolve(private_key=bad)
    assert bad[2:] not in str(info.value)


# --- X402_KEY_FILE ---------------------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("content", ["{key}", "{key}\n", "\n  {key}  \r\n\n", "\ufeff{key}\n", "{bare}"])
def test_key_file_source(tmp_path: Path, key: str, address: str, content: str) -> None:
    path = write_key_file(tmp_path / "key.hex", content.format(key=key, bare=key[2:]))
    resolved = resolve(key_file=path)
    assert resolved == key
    assert Wallet(resolved).address == address


@posix_only
def test_key_file_through_a_symlink(tmp_path: Path, key: str) -> None:
    target = write_key_file(tmp_path / "key.hex", key)
    link = tmp_path / "link.hex"
    link.symlink_to(target)
    assert resolve(key_file=link) == key


@posix_only
@pytest.mark.parametrize(
    ("mode", "who"),
    [(0o644, "group and others"), (0o640, "group"), (0o604, "others"), (0o660, "group"), (0o602, "others")],
)
def test_key_file_accessible_by_others_is_refused(tmp_path: Path, key: str, mode: int, who: str) -> None:
    path = write_key_file(tmp_path / "key.hex", key, mode)
    with pytest.raises(KeySourceError) as info:
        resolve(key_file=path)
    message = str(info.value)
    assert "X402_KEY_FILE" in message
    assert f"accessible by {who} " in message
    assert f"mode {mode:04o}" in message
    assert f"`chmod 600 {path}`" in message
    assert key[2:] not in message


@posix_only
def test_key_file_owner_read_only_is_accepted(tmp_path: Path, key: str) -> None:
    assert resolve(key_file=write_key_file(tmp_path / "key.hex", key, 0o400)) == key


@posix_only
def test_key_file_mode_is_not_checked_on_windows(tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_on_windows", lambda: True)
    assert resolve(key_file=write_key_file(tmp_path / "key.hex", key, 0o644)) == key


def test_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.hex"
    with pytest.raises(KeySourceError, match="does not exist") as info:
        resolve(key_file=path)
    assert "X402_KEY_FILE" in str(info.value) and str(path) in str(info.value)


def test_key_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match=r"X402_KEY_FILE .* is a directory"):
        resolve(key_file=tmp_path)


@posix_only
def test_key_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeySourceError, match="not a regular file"):
        resolve(key_file=fifo)


def _bad_key_file_contents(key: str) -> dict[str, bytes]:
    bare = key[2:]
    return {
        "truncated": bare[:-2].encode(),
        "not-hex": (bare[:-1] + "z").encode(),
        "two-keys": f"{key}\n{key}\n".encode(),
        "with-label": f"PRIVATE_KEY={key}\n".encode(),
        "zero": ("0" * 64).encode(),
        "above-curve-order": ("f" * 64).encode(),
        "not-utf8": b"\xff\xfe\x00" + bare.encode() + b"\xff",
        "json": json.dumps({"key": key}).encode(),
        "huge": ((key + "\n") * 100).encode(),
        "empty": b"",
    }


@posix_only
@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "not-hex",
        "two-keys",
        "with-label",
        "zero",
        "above-curve-order",
        "not-utf8",
        "json",
        "huge",
        "empty",
    ],
)
def test_bad_key_file_content_is_refused_without_quoting_it(tmp_path: Path, key: str, case: str) -> None:
    path = write_key_file(tmp_path / "key.hex", _bad_key_file_contents(key)[case])
    with pytest.raises(KeySourceError) as info:
        resolve(key_file=path)
    message = str(info.value)
    assert "X402_KEY_FILE" in message and str(path) in message
    assert key[2:] not in message.lower()
    assert_no_secret_in_chain(info.value, key)


# --- more than one source --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ("X402_PRIVATE_KEY", "X402_KEY_FILE"),
        ("X402_PRIVATE_KEY", "X402_KEYSTORE"),
        ("X402_KEY_FILE", "X402_KEYSTORE"),
        ("X402_PRIVATE_KEY", "X402_KEY_FILE", "X402_KEYSTORE"),
    ],
)
def test_more_than_one_source_is_refused_naming_them(tmp_path: Path, key: str, names: tuple[str, ...]) -> None:
    values: dict[str, dict[str, Any]] = {
        "X402_PRIVATE_KEY": {"private_key": key},
        "X402_KEY_FILE": {"key_file": tmp_path / "key.hex"},
        "X402_KEYSTORE": {"keystore": tmp_path / "keystore.json", "keystore_password": PASSWORD},
    }
    given: dict[str, Any] = {}
    for name in names:
        given.update(values[name])
    with pytest.raises(KeySourceError, match="set only one of") as info:
        resolve(**given)
    message = str(info.value)
    for name in ("X402_PRIVATE_KEY", "X402_KEY_FILE", "X402_KEYSTORE"):
        assert (name in message) == (name in names), (name, message)
    assert key[2:] not in message and PASSWORD not in message


def test_keystore_password_without_keystore_is_refused(key: str) -> None:
    with pytest.raises(KeySourceError, match="X402_KEYSTORE_PASSWORD is set but X402_KEYSTORE is not") as info:
        resolve(keystore_password=PASSWORD)
    assert PASSWORD not in str(info.value)
    with pytest.raises(KeySourceError, match="X402_KEYSTORE_PASSWORD"):
        resolve(private_key=key, keystore_password=PASSWORD)


# --- create_keystore and X402_KEYSTORE -------------------------------------------------------------


def test_default_keystore_path(tmp_path: Path) -> None:
    assert default_keystore_path(tmp_path) == tmp_path / "keystore.json"


def test_keystore_with_production_kdf_round_trip(default_kdf_keystore: tuple[Path, str], key: str) -> None:
    path, returned = default_kdf_keystore
    assert returned == Wallet(key).address
    data = json.loads(path.read_text())
    assert data["crypto"]["kdf"] == "scrypt"
    assert data["crypto"]["kdfparams"]["n"] == 2**18  # the library default, not a test shortcut
    assert key[2:] not in path.read_text().lower()
    resolved = resolve(keystore=path, keystore_password=PASSWORD)
    assert resolved == key
    assert Wallet(resolved).address == returned


@posix_only
def test_create_keystore_modes(tmp_path: Path, key: str, address: str) -> None:
    old_umask = os.umask(0)  # the modes must not depend on a permissive umask
    try:
        path = tmp_path / "a" / "b" / "keystore.json"
        assert create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST) == address
    finally:
        os.umask(old_umask)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert mode_of(path.parent.parent) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["keystore.json"]  # no temp file left
    assert resolve(keystore=path, keystore_password=PASSWORD) == key


@posix_only
def test_create_keystore_leaves_an_existing_parent_alone(tmp_path: Path, key: str) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    os.chmod(parent, 0o755)
    create_keystore(parent / "keystore.json", PASSWORD, private_key=key, _scrypt_n=FAST)
    assert mode_of(parent) == 0o755
    assert mode_of(parent / "keystore.json") == 0o600


def test_create_keystore_with_a_fresh_key(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    returned = create_keystore(path, PASSWORD, _scrypt_n=FAST)
    resolved = resolve(keystore=path, keystore_password=PASSWORD)
    assert resolved is not None
    assert Wallet(resolved).address == returned
    assert returned.startswith("0x") and returned != returned.lower()  # checksummed


def test_create_keystore_refuses_to_overwrite(fast_keystore: Path, key: str) -> None:
    before = fast_keystore.read_bytes()
    with pytest.raises(KeySourceError, match="refusing to overwrite"):
        create_keystore(fast_keystore, "another password", _scrypt_n=FAST)
    assert fast_keystore.read_bytes() == before
    assert sorted(p.name for p in fast_keystore.parent.iterdir()) == ["keystore.json"]


def test_create_keystore_never_clobbers_a_file_that_appears_meanwhile(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keystore.json"
    real = keys._make_private_dirs

    def racing(directory: Path) -> None:
        real(directory)
        path.write_text("someone else's keystore")

    monkeypatch.setattr(keys, "_make_private_dirs", racing)
    with pytest.raises(KeySourceError, match="refusing to overwrite"):
        create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST)
    assert path.read_text() == "someone else's keystore"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "keystore.json"]


def test_create_keystore_without_hard_links_falls_back_to_replace(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "keystore.json"
    create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST)
    assert resolve(keystore=path, keystore_password=PASSWORD) == key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "keystore.json"]


def test_create_keystore_refuses_an_empty_password(tmp_path: Path, key: str) -> None:
    path = tmp_path / "keystore.json"
    with pytest.raises(KeySourceError, match="empty password"):
        create_keystore(path, "", private_key=key, _scrypt_n=FAST)
    assert not path.exists()


def test_create_keystore_refuses_a_bad_key_without_quoting_it(tmp_path: Path, key: str) -> None:
    bad = key[:-1] + "x"
    with pytest.raises(KeySourceError, match="not a valid secp256k1 key") as info:
        create_keystore(tmp_path / "keystore.json", PASSWORD, private_key=bad, _scrypt_n=FAST)
    assert bad[2:] not in str(info.value)
    assert not (tmp_path / "keystore.json").exists()


def test_keystore_wrong_password(fast_keystore: Path) -> None:
    with pytest.raises(KeySourceError, match="X402_KEYSTORE_PASSWORD does not decrypt the keystore"):
        resolve(keystore=fast_keystore, keystore_password="wrong")


@pytest.mark.parametrize("password", [None, ""])
def test_keystore_missing_password(fast_keystore: Path, password: str | None) -> None:
    with pytest.raises(KeySourceError, match="X402_KEYSTORE_PASSWORD is not"):
        resolve(keystore=fast_keystore, keystore_password=password)


def test_keystore_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match=r"X402_KEYSTORE .* does not exist"):
        resolve(keystore=tmp_path / "nope.json", keystore_password=PASSWORD)


def test_keystore_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match=r"X402_KEYSTORE .* is not a regular file"):
        resolve(keystore=tmp_path, keystore_password=PASSWORD)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is not json", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2, 3]", "not an encrypted keystore"),
        (b"null", "not an encrypted keystore"),
        (b'{"address": "abc"}', "not an encrypted keystore"),
        (b'{"version": 3}', "not an encrypted keystore"),
        (b'{"version": 1, "crypto": {}}', "not an encrypted keystore"),
        (b'{"version": 3, "crypto": {}}', "not a usable keystore"),
        (b'{"version": 3, "crypto": {"kdf": "bcrypt", "kdfparams": {}}}', "not a usable keystore"),
    ],
)
def test_file_that_is_not_a_keystore(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "keystore.json"
    path.write_bytes(content)
    with pytest.raises(KeySourceError, match=expected) as info:
        resolve(keystore=path, keystore_password=PASSWORD)
    assert "X402_KEYSTORE" in str(info.value) and str(path) in str(info.value)


@posix_only
def test_plain_key_file_given_as_keystore_is_refused_without_quoting_it(tmp_path: Path, key: str) -> None:
    path = write_key_file(tmp_path / "key.hex", key)
    with pytest.raises(KeySourceError, match="not valid JSON") as info:
        resolve(keystore=path, keystore_password=PASSWORD)
    assert_no_secret_in_chain(info.value, key)


@posix_only
def test_keystore_readable_by_others_warns_on_the_log_not_stdout(
    fast_keystore: Path, key: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(fast_keystore, 0o644)
    with caplog.at_level(logging.WARNING, logger="x402_mcp.payments.keys"):
        assert resolve(keystore=fast_keystore, keystore_password=PASSWORD) == key
    assert "readable by group or others" in caplog.text
    assert key[2:] not in caplog.text and PASSWORD not in caplog.text
    assert capsys.readouterr().out == ""


# --- the key never shows up in an error, its causes, or the log ------------------------------------


def assert_no_secret_in_chain(exc: BaseException, key: str, *secrets: str) -> None:
    """Neither the key (any case, with or without 0x) nor a secret appears in the exception chain."""
    needles = [key[2:].lower(), *secrets]
    seen: BaseException | None = exc
    while seen is not None:
        texts = [str(seen), repr(seen), repr(seen.args)]
        for attribute in ("object", "doc"):  # UnicodeDecodeError.object, JSONDecodeError.doc
            texts.append(repr(getattr(seen, attribute, "")))
        for text in texts:
            for needle in needles:
                assert needle.lower() not in text.lower(), f"{needle!r} leaked via {type(seen).__name__}"
        seen = seen.__cause__ or seen.__context__


Scenario = Callable[[Path, str], None]


def _scenarios() -> dict[str, Scenario]:
    def bad_env(tmp: Path, key: str) -> None:
        resolve(private_key=key[:-1] + "z")

    def env_out_of_range(tmp: Path, key: str) -> None:
        resolve(private_key="f" * 64)

    def loose_file(tmp: Path, key: str) -> None:
        resolve(key_file=write_key_file(tmp / "k", key, 0o644))

    def bad_file(tmp: Path, key: str) -> None:
        resolve(key_file=write_key_file(tmp / "k", key + key))

    def non_utf8_file(tmp: Path, key: str) -> None:
        resolve(key_file=write_key_file(tmp / "k", b"\xff" + key.encode()))

    def two_sources(tmp: Path, key: str) -> None:
        resolve(private_key=key, key_file=write_key_file(tmp / "k", key))

    def key_file_as_keystore(tmp: Path, key: str) -> None:
        resolve(keystore=write_key_file(tmp / "k", key), keystore_password=PASSWORD)

    def wrong_password(tmp: Path, key: str) -> None:
        path = tmp / "ks.json"
        create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST)
        resolve(keystore=path, keystore_password=PASSWORD + "!")

    def missing_password(tmp: Path, key: str) -> None:
        path = tmp / "ks.json"
        create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST)
        resolve(keystore=path, keystore_password=None)

    def overwrite(tmp: Path, key: str) -> None:
        path = tmp / "ks.json"
        create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST)
        create_keystore(path, PASSWORD, private_key=key, _scrypt_n=FAST)

    def create_bad_key(tmp: Path, key: str) -> None:
        create_keystore(tmp / "ks.json", PASSWORD, private_key=key + "00", _scrypt_n=FAST)

    def malformed_keystore(tmp: Path, key: str) -> None:
        path = tmp / "ks.json"
        path.write_text(json.dumps({"version": 3, "crypto": {"kdf": "scrypt", "note": key}}))
        resolve(keystore=path, keystore_password=PASSWORD)

    return {f.__name__: f for f in locals().values() if callable(f)}


SCENARIOS = _scenarios()


@posix_only
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_key_and_password_never_leak(
    tmp_path: Path, key: str, name: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(KeySourceError) as info:
        SCENARIOS[name](tmp_path, key)
    secrets = (PASSWORD,) if "password" in name or "keystore" in name else ()
    assert_no_secret_in_chain(info.value, key, *secrets)
    assert key[2:].lower() not in caplog.text.lower()
    assert PASSWORD not in caplog.text
    out, err = capsys.readouterr()
    assert key[2:].lower() not in (out + err).lower()
    # Apart from the plain key files the scenarios write themselves, no file holds the key.
    if name != "malformed_keystore":
        for path in tmp_path.rglob("*"):
            if path.is_file() and path.name != "k":
                assert key[2:].lower() not in path.read_text(errors="replace").lower(), path


# --- the wallet's signatures ----------------------------------------------------------------------


def test_wallet_signs_without_coincurve() -> None:
    """eth-keys picks libsecp256k1 (coincurve) by itself; without it the wallet signs in pure Python."""
    code = """
import sys
sys.modules["coincurve"] = None  # as if it were not installed: `import coincurve` raises
from eth_account import Account
from eth_account.messages import encode_typed_data
from x402_mcp.payments.protocol import TRANSFER_WITH_AUTHORIZATION_TYPES
from x402_mcp.payments.signer import Wallet, new_private_key

wallet = Wallet(new_private_key())
message = {
    "types": TRANSFER_WITH_AUTHORIZATION_TYPES,
    "primaryType": "TransferWithAuthorization",
    "domain": {"name": "USD Coin", "version": "2", "chainId": 8453,
               "verifyingContract": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"},
    "message": {"from": wallet.address, "to": wallet.address, "value": 1, "validAfter": 0,
                "validBefore": 2**40, "nonce": bytes(32)},
}
signature = wallet.sign_typed_data(message)
signer = Account.recover_message(encode_typed_data(full_message=message), signature=bytes.fromhex(signature[2:]))
print(len(signature), signer == wallet.address)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["132", "True"]  # 0x + 65 bytes, recovering the wallet's address


def test_new_private_keys_are_distinct_and_valid() -> None:
    keys_made = {new_private_key() for _ in range(8)}
    assert len(keys_made) == 8
    for made in keys_made:
        assert check_private_key(made) == made  # 0x-prefixed lowercase hex, in the curve's range
