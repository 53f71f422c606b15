"""Resume tokens: sealed round trips, error codes, key sharing and the key file."""

from __future__ import annotations

import base64
import os
import stat

import nacl.secret
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay._resume import (
    PREFIX,
    KeyFileError,
    ResumeClaims,
    ResumeError,
    ResumeExpired,
    ResumeForged,
    ResumeMalformed,
    ResumeSealer,
    load_or_create_key,
)

NOW = 1_700_000_000.0
CLAIMS = {"room": "ABCD", "player_id": "steam:42", "seat": 3, "issued": NOW, "expires": NOW + 60}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def sealer() -> ResumeSealer:
    return ResumeSealer()


def test_round_trip(sealer: ResumeSealer) -> None:
    token = sealer.seal(**CLAIMS)
    assert sealer.open(token, now=NOW + 1) == ResumeClaims(**CLAIMS)


def test_token_is_url_safe_text(sealer: ResumeSealer) -> None:
    token = sealer.seal(**CLAIMS)
    assert token.startswith(PREFIX)
    assert set(token[len(PREFIX) :]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


def test_clients_cannot_read_the_claims(sealer: ResumeSealer) -> None:
    token = sealer.seal(**CLAIMS)
    raw = unb64(token[len(PREFIX) :])
    for secret in (b"ABCD", b"steam:42"):
        assert secret not in raw
        assert b64(secret)[:4] not in token
    # A fresh random nonce per seal: the same claims never give the same token twice.
    assert sealer.seal(**CLAIMS) != token


def test_claims_are_frozen_and_slotted(sealer: ResumeSealer) -> None:
    claims = sealer.open(sealer.seal(**CLAIMS), now=NOW)
    with pytest.raises(AttributeError):
        claims.seat = 0  # type: ignore[misc]
    assert not hasattr(claims, "__dict__")


def test_every_error_has_its_own_code() -> None:
    codes = [ResumeMalformed.code, ResumeForged.code, ResumeExpired.code]
    assert codes == ["resume_malformed", "resume_forged", "resume_expired"]
    assert all(issubclass(cls, ResumeError) for cls in (ResumeMalformed, ResumeForged))
    assert ResumeError("x", code="resume_forged").code == "resume_forged"


def test_expired_at_the_boundary(sealer: ResumeSealer) -> None:
    token = sealer.seal(**CLAIMS)
    assert sealer.open(token, now=NOW + 59.999).seat == 3
    with pytest.raises(ResumeExpired) as info:
        sealer.open(token, now=NOW + 60)
    assert info.value.code == "resume_expired"


def test_another_key_means_forged(sealer: ResumeSealer) -> None:
    token = ResumeSealer().seal(**CLAIMS)
    with pytest.raises(ResumeForged) as info:
        sealer.open(token, now=NOW)
    assert info.value.code == "resume_forged"


def test_every_flipped_byte_is_forged(sealer: ResumeSealer) -> None:
    raw = unb64(sealer.seal(**CLAIMS)[len(PREFIX) :])
    for i in range(len(raw)):
        tampered = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        with pytest.raises(ResumeForged):
            sealer.open(PREFIX + b64(tampered), now=NOW)


def test_a_token_forged_from_scratch_is_forged(sealer: ResumeSealer) -> None:
    # A client that knows the format but not the key can only guess.
    guess = nacl.secret.SecretBox(bytes(32)).encrypt(b'["ABCD","steam:42",0,0,9e99]')
    with pytest.raises(ResumeForged):
        sealer.open(PREFIX + b64(bytes(guess)), now=NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        PREFIX,
        "rw2." + "A" * 80,
        PREFIX + "***",
        PREFIX + "A" * 81,
        PREFIX + b64(bytes(39)),
        PREFIX + "A" * 2000,
        "A" * 80,
    ],
)
def test_malformed(sealer: ResumeSealer, token: str) -> None:
    with pytest.raises(ResumeMalformed) as info:
        sealer.open(token, now=NOW)
    assert info.value.code == "resume_malformed"


@pytest.mark.parametrize("token", [None, b"rw1.AAAA", 7])
def test_non_string_is_malformed(sealer: ResumeSealer, token: object) -> None:
    with pytest.raises(ResumeMalformed):
        sealer.open(token, now=NOW)  # type: ignore[arg-type]


def test_non_canonical_spelling_is_malformed(sealer: ResumeSealer) -> None:
    # 46 bytes of claims + 40 of nonce and tag: not a multiple of 3, so the last
    # character has spare low bits that a sloppy decoder would ignore.
    text = sealer.seal(**{**CLAIMS, "player_id": "steam:4"})[len(PREFIX) :]
    assert len(text) % 4 != 0
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tweaked = text[:-1] + alphabet[alphabet.index(text[-1]) | 1]
    if tweaked == text:
        tweaked = text[:-1] + alphabet[alphabet.index(text[-1]) | 2]
    assert unb64(tweaked) == unb64(text)
    with pytest.raises(ResumeMalformed):
        sealer.open(PREFIX + tweaked, now=NOW)


def test_unknown_plaintext_format_is_malformed(sealer: ResumeSealer) -> None:
    # Authentic (sealed with our key) but not claims this version understands.
    box = nacl.secret.SecretBox(sealer.key)
    for plain in (b"{}", b'["ABCD","p",1,0]', b'["ABCD","p",-1,0,1]', b"\xff", b"[NaN]"):
        with pytest.raises(ResumeMalformed):
            sealer.open(PREFIX + b64(bytes(box.encrypt(plain))), now=NOW)


def test_shared_key_opens_tokens_from_before_a_restart(sealer: ResumeSealer) -> None:
    token = sealer.seal(**CLAIMS)
    restarted = ResumeSealer(sealer.key)
    assert restarted.open(token, now=NOW).player_id == "steam:42"
    assert len(sealer.key) == 32
    assert sealer.key.hex() not in repr(sealer)


@pytest.mark.parametrize("key", [b"", b"k" * 31, b"k" * 33, "k" * 32])
def test_bad_key_size(key: object) -> None:
    with pytest.raises(ValueError):
        ResumeSealer(key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "override",
    [
        {"room": ""},
        {"room": "R" * 65},
        {"player_id": 5},
        {"seat": -1},
        {"seat": True},
        {"seat": 1.0},
        {"seat": 2**16},
        {"issued": float("nan")},
        {"expires": float("inf")},
        {"expires": "soon"},
    ],
)
def test_seal_rejects_bad_claims(sealer: ResumeSealer, override: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sealer.seal(**{**CLAIMS, **override})  # type: ignore[arg-type]


# --- key file --------------------------------------------------------------------------


def test_key_file_is_created_once_with_mode_0600(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "resume.key")
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert os.listdir(tmp_path) == ["resume.key"]  # no temporary file left behind
    token = ResumeSealer(key).seal(**CLAIMS)
    assert ResumeSealer(load_or_create_key(path)).open(token, now=NOW).seat == 3


def test_existing_key_file_is_read_not_replaced(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "resume.key")
    key = bytes(range(32))
    with open(path, "w") as f:
        f.write(b64(key) + "\n")
    assert load_or_create_key(path) == key


@pytest.mark.parametrize("content", [b"", b"not base64!", b64(bytes(16)).encode(), b"\xff" * 40])
def test_bad_key_file(tmp_path: os.PathLike[str], content: bytes) -> None:
    path = os.path.join(tmp_path, "resume.key")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(KeyFileError, match=r"resume\.key"):
        load_or_create_key(path)
    with open(path, "rb") as f:
        assert f.read() == content  # never overwritten


def test_key_file_in_a_missing_directory(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(KeyFileError, match="cannot create"):
        load_or_create_key(os.path.join(tmp_path, "nope", "resume.key"))


# --- fuzzing: open returns claims or raises ResumeError, nothing else ------------------

_FUZZ_SEALER = ResumeSealer(bytes(range(32)))
_FUZZ_TOKEN = _FUZZ_SEALER.seal(**CLAIMS)


@settings(deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(text: str) -> None:
    for candidate in (text, PREFIX + text):
        try:
            _FUZZ_SEALER.open(candidate, now=NOW)
        except ResumeError:
            pass


@settings(deadline=None)
@given(st.data())
def test_fuzz_mutated_tokens_are_always_rejected(data: st.DataObject) -> None:
    chars = list(_FUZZ_TOKEN)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(chars) - 1))
        op = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        char = data.draw(st.sampled_from("AZaz09-_.=é"))
        if op == "replace":
            chars[at] = char
        elif op == "delete" and len(chars) > 1:
            del chars[at]
        else:
            chars.insert(at, char)
    mutated = "".join(chars)
    if mutated == _FUZZ_TOKEN:
        assert _FUZZ_SEALER.open(mutated, now=NOW) == ResumeClaims(**CLAIMS)
        return
    with pytest.raises(ResumeError):
        _FUZZ_SEALER.open(mutated, now=NOW)
