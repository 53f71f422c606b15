"""Join tickets: PASETO v4.public format, claims, error codes, key files, pyseto interop."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import nacl.signing
import pyseto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from relay._tickets import (
    KeyFileError,
    SigningKeyPair,
    Ticket,
    TicketBadClaims,
    TicketBadSignature,
    TicketError,
    TicketExpired,
    TicketMalformed,
    TicketNotYetValid,
    TicketUnknownKey,
    TicketVerifier,
    TicketWrongRoom,
    key_id,
    load_signing_key,
    load_verify_keys,
    mint_ticket,
    pae,
    paseto_sign,
    paseto_verify,
    public_paserk,
    verify_key_from_paserk,
    write_keypair,
)

NOW = 1_700_000_000.0
LEEWAY = 5.0

# Official PASETO v4 test vectors 4-S-1 and 4-S-2 (paseto-standard/test-vectors).
VECTOR_SECRET = bytes.fromhex(
    "b4cbfb43df4ce210727d953e4a713307fa19bb7d9f85041438d9e11b942a3774"
    "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2"
)
VECTOR_PAYLOAD = b'{"data":"this is a signed message","exp":"2022-01-01T00:00:00+00:00"}'
VECTOR_FOOTER = b'{"kid":"zVhMiPBP9fRf2snEcT7gFTioeA9COcNy9DfgL1W60haN"}'
VECTOR_4S1 = (
    "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDow"
    "MDowMCswMDowMCJ9bg_XBBzds8lTZShVlwwKSgeKpLT3yukTw6JUz3W4h_ExsQV-P0V54zemZDcAxFaSeef1Ql"
    "XEFtkqxT1ciiQEDA"
)
VECTOR_4S2 = (
    "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDow"
    "MDowMCswMDowMCJ9v3Jt8mx_TdM2ceTGoqwrh4yDFn0XsHvvV_D0DtwQxVrJEBMl0F2caAdgnpKlt4p7xBnx1H"
    "cO-SPo8FPp214HDw.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhh"
    "TiJ9"
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def pair() -> SigningKeyPair:
    return SigningKeyPair.generate()


@pytest.fixture(scope="module")
def other_pair() -> SigningKeyPair:
    return SigningKeyPair.generate()


@pytest.fixture
def verifier(pair: SigningKeyPair) -> TicketVerifier:
    return TicketVerifier({pair.kid: pair.verify_key}, leeway=LEEWAY)


def mint(pair: SigningKeyPair, **kw: object) -> str:
    args: dict[str, object] = {"player_id": "p-1", "name": "Ann", "now": NOW}
    args.update(kw)
    return mint_ticket(pair, **args)  # type: ignore[arg-type]


def sign_claims(pair: SigningKeyPair, claims: object, footer: object = None) -> str:
    """A correctly signed token over arbitrary claims (to reach the claim checks)."""
    message = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    if footer is None:
        footer = {"kid": pair.kid}
    foot = footer if isinstance(footer, bytes) else json.dumps(footer).encode()
    return paseto_sign(pair.signing_key, message, foot)


def good_claims(**override: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": "p-1",
        "name": "Ann",
        "role": "player",
        "iat": "2023-11-14T22:13:20+00:00",
        "nbf": "2023-11-14T22:13:20+00:00",
        "exp": "2023-11-14T23:13:20+00:00",
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


# --- the PASETO layer ------------------------------------------------------------------


def test_pae_matches_the_specification_examples() -> None:
    assert pae() == b"\x00" * 8
    assert pae(b"") == b"\x01" + b"\x00" * 7 + b"\x00" * 8
    assert pae(b"test") == b"\x01" + b"\x00" * 7 + b"\x04" + b"\x00" * 7 + b"test"


def test_official_vectors_sign_byte_for_byte_and_verify() -> None:
    key = nacl.signing.SigningKey(VECTOR_SECRET[:32])
    assert bytes(key.verify_key) == VECTOR_SECRET[32:]
    # Ed25519 is deterministic, so our encoder must reproduce the vectors exactly.
    assert paseto_sign(key, VECTOR_PAYLOAD) == VECTOR_4S1
    assert paseto_sign(key, VECTOR_PAYLOAD, VECTOR_FOOTER) == VECTOR_4S2
    assert paseto_verify(key.verify_key, VECTOR_4S1) == (VECTOR_PAYLOAD, b"")
    assert paseto_verify(key.verify_key, VECTOR_4S2) == (VECTOR_PAYLOAD, VECTOR_FOOTER)


def test_official_paserk_vectors() -> None:
    zero = nacl.signing.VerifyKey(bytes(32))
    assert public_paserk(zero) == "k4.public.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    assert key_id(zero) == "k4.pid.S_XQmeEwHbbvRmiyfXfHYpLGjXGzjTRSDoT1YtTakWFE"
    secret = SigningKeyPair(nacl.signing.SigningKey(bytes(32)))
    assert secret.secret_paserk() == (
        "k4.secret.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7aie8zrakLWKjqNAqbw1zZTIVdx3iQ6Y6"
        "wEihi1naKQ"
    )


def test_implicit_assertion_is_signed_but_not_sent(pair: SigningKeyPair) -> None:
    token = mint(pair, implicit_assertion=b"roomwire/eu-1")
    assert "roomwire" not in token
    bound = TicketVerifier({pair.kid: pair.verify_key}, implicit_assertion=b"roomwire/eu-1")
    assert bound.verify(token, now=NOW).player_id == "p-1"
    with pytest.raises(TicketBadSignature):
        TicketVerifier({pair.kid: pair.verify_key}).verify(token, now=NOW)
    with pytest.raises(TicketBadSignature):
        bound.verify(mint(pair), now=NOW)


# --- round trips -----------------------------------------------------------------------


def test_round_trip_carries_every_claim(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    token = mint(pair, player_id="steam:42", name="Zoë", room="ABCD", role="host", ttl=600)
    assert token.startswith("v4.public.")
    ticket = verifier.verify(token, room="ABCD", now=NOW + 1)
    assert ticket == Ticket(
        player_id="steam:42",
        name="Zoë",
        room="ABCD",
        role="host",
        expires=NOW + 600,
        not_before=NOW,
        kid=pair.kid,
        issued=NOW,
    )


def test_claims_are_rfc3339_and_footer_names_the_key(pair: SigningKeyPair) -> None:
    token = mint(pair, not_before=NOW + 10, ttl=90)
    body, footer = token[len("v4.public.") :].split(".")
    claims = json.loads(unb64(body)[:-64])
    assert claims == {
        "sub": "p-1",
        "name": "Ann",
        "role": "player",
        "iat": "2023-11-14T22:13:20+00:00",
        "nbf": "2023-11-14T22:13:30+00:00",
        "exp": "2023-11-14T22:14:50+00:00",
    }
    assert json.loads(unb64(footer)) == {"kid": pair.kid}
    assert pair.kid.startswith("k4.pid.")


@pytest.mark.parametrize("role", ["player", "spectator", "host"])
def test_every_role_round_trips(pair: SigningKeyPair, verifier: TicketVerifier, role: str) -> None:
    assert verifier.verify(mint(pair, role=role), now=NOW).role == role


def test_unbound_ticket_joins_any_room(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    ticket = verifier.verify(mint(pair), room="WXYZ", now=NOW)
    assert ticket.room is None


def test_times_are_whole_seconds_floored(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    ticket = verifier.verify(mint(pair, now=NOW + 0.75, ttl=10.5), now=NOW + 1)
    assert (ticket.issued, ticket.not_before, ticket.expires) == (NOW, NOW, NOW + 11)
    with pytest.raises(ValueError):
        mint(pair, ttl=0.5)


def test_name_loses_control_and_bidi_characters(
    pair: SigningKeyPair, verifier: TicketVerifier
) -> None:
    token = mint(pair, name="\x00 An\u202en\x1b\x7f ")
    assert verifier.verify(token, now=NOW).name == "Ann"
    signed = sign_claims(pair, good_claims(name="\tBo\u2066b\n"))
    assert verifier.verify(signed, now=NOW).name == "Bob"


def test_ticket_is_frozen_and_slotted(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    ticket = verifier.verify(mint(pair), now=NOW)
    with pytest.raises(AttributeError):
        ticket.role = "host"  # type: ignore[misc]
    assert not hasattr(ticket, "__dict__")


# --- error codes -----------------------------------------------------------------------


def test_every_error_has_its_own_code() -> None:
    codes = {
        cls: cls.code
        for cls in (
            TicketMalformed,
            TicketExpired,
            TicketNotYetValid,
            TicketBadSignature,
            TicketUnknownKey,
            TicketWrongRoom,
            TicketBadClaims,
        )
    }
    assert set(codes.values()) == {
        "ticket_malformed",
        "ticket_expired",
        "ticket_not_yet_valid",
        "ticket_bad_signature",
        "ticket_unknown_key",
        "ticket_wrong_room",
        "ticket_bad_claims",
    }
    assert all(issubclass(cls, TicketError) for cls in codes)


def test_expired_at_the_leeway_boundary(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    token = mint(pair, ttl=60)
    expires = NOW + 60
    assert verifier.verify(token, now=expires).player_id == "p-1"
    assert verifier.verify(token, now=expires + LEEWAY - 0.001).player_id == "p-1"
    with pytest.raises(TicketExpired) as info:
        verifier.verify(token, now=expires + LEEWAY)
    assert info.value.code == "ticket_expired"


def test_not_yet_valid_at_the_leeway_boundary(
    pair: SigningKeyPair, verifier: TicketVerifier
) -> None:
    token = mint(pair, not_before=NOW + 100, ttl=600)
    assert verifier.verify(token, now=NOW + 100 - LEEWAY).player_id == "p-1"
    with pytest.raises(TicketNotYetValid) as info:
        verifier.verify(token, now=NOW + 100 - LEEWAY - 0.001)
    assert info.value.code == "ticket_not_yet_valid"


def test_zero_leeway_is_exact(pair: SigningKeyPair) -> None:
    strict = TicketVerifier({pair.kid: pair.verify_key}, leeway=0)
    token = mint(pair, ttl=60)
    assert strict.verify(token, now=NOW).player_id == "p-1"
    with pytest.raises(TicketNotYetValid):
        strict.verify(token, now=NOW - 0.001)
    assert strict.verify(token, now=NOW + 59.999).player_id == "p-1"
    with pytest.raises(TicketExpired):
        strict.verify(token, now=NOW + 60)


def test_wrong_room(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    token = mint(pair, room="ABCD")
    with pytest.raises(TicketWrongRoom) as info:
        verifier.verify(token, room="WXYZ", now=NOW)
    assert info.value.code == "ticket_wrong_room"
    # Without a room to compare, the caller gets the binding back to check itself.
    assert verifier.verify(token, now=NOW).room == "ABCD"


def test_tampered_payload_or_signature_is_bad_signature(
    pair: SigningKeyPair, verifier: TicketVerifier
) -> None:
    token = mint(pair, role="player")
    body, footer = token[len("v4.public.") :].split(".")
    raw = unb64(body)
    message, signature = raw[:-64], raw[-64:]
    promoted = message.replace(b'"role":"player"', b'"role":"host"')
    assert promoted != message
    for forged in (promoted + signature, message + bytes([signature[0] ^ 1]) + signature[1:]):
        with pytest.raises(TicketBadSignature) as info:
            verifier.verify(f"v4.public.{b64(forged)}.{footer}", now=NOW)
        assert info.value.code == "ticket_bad_signature"


def test_footer_naming_another_of_our_keys_is_bad_signature(
    pair: SigningKeyPair, other_pair: SigningKeyPair
) -> None:
    both = TicketVerifier({pair.kid: pair.verify_key, other_pair.kid: other_pair.verify_key})
    token = mint(pair)
    body = token[len("v4.public.") :].split(".")[0]
    swapped = f"v4.public.{body}.{b64(json.dumps({'kid': other_pair.kid}).encode())}"
    with pytest.raises(TicketBadSignature):
        both.verify(swapped, now=NOW)


def test_key_we_do_not_hold_is_unknown_key(
    other_pair: SigningKeyPair, verifier: TicketVerifier
) -> None:
    with pytest.raises(TicketUnknownKey) as info:
        verifier.verify(mint(other_pair), now=NOW)
    assert info.value.code == "ticket_unknown_key"


def test_rotation_accepts_both_keys_until_one_is_removed(
    pair: SigningKeyPair, other_pair: SigningKeyPair
) -> None:
    old, new = mint(pair), mint(other_pair)
    both = TicketVerifier({pair.kid: pair.verify_key, other_pair.kid: other_pair.verify_key})
    assert both.verify(old, now=NOW).kid == pair.kid
    assert both.verify(new, now=NOW).kid == other_pair.kid
    only_new = TicketVerifier({other_pair.kid: other_pair.verify_key})
    assert only_new.verify(new, now=NOW).kid == other_pair.kid
    with pytest.raises(TicketUnknownKey):
        only_new.verify(old, now=NOW)


MALFORMED = [
    "",
    "v4.public.",
    "v4.local.AAAA",
    "v3.public.AAAA",
    "V4.PUBLIC.AAAA",
    "v4.public.***",
    "v4.public.AAAA=",
    "v4.public.A",
    "v4.public." + b64(bytes(63)),
    "v4.public.AAAA.BBBB.CCCC",
    "x" * 5000,
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_strings(verifier: TicketVerifier, token: str) -> None:
    with pytest.raises(TicketMalformed) as info:
        verifier.verify(token, now=NOW)
    assert info.value.code == "ticket_malformed"


@pytest.mark.parametrize("token", [None, b"v4.public.AAAA", 42, ["v4.public."]])
def test_non_string_is_malformed(verifier: TicketVerifier, token: object) -> None:
    with pytest.raises(TicketMalformed):
        verifier.verify(token, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "footer",
    [
        b"",
        b"not json",
        b'["kid"]',
        b'{"kid": 7}',
        b'{"key": "k4.pid.x"}',
        b'{"kid": "a", "kid": "b"}',
        b"\xff\xfe",
        b'{"kid": "' + b"a" * 600 + b'"}',
    ],
)
def test_footer_without_a_usable_kid_is_malformed(pair: SigningKeyPair, footer: bytes) -> None:
    verifier = TicketVerifier({pair.kid: pair.verify_key})
    token = paseto_sign(pair.signing_key, json.dumps(good_claims()).encode(), footer)
    with pytest.raises(TicketMalformed):
        verifier.verify(token, now=NOW)


def test_non_canonical_base64_is_malformed(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    token = mint(pair)
    body, footer = token[len("v4.public.") :].split(".")
    # The last character of a 2-byte tail carries 2 unused bits; setting one changes the
    # spelling but not the bytes, and we accept exactly one spelling.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(footer) % 4 in (2, 3)
    last = alphabet.index(footer[-1])
    tweaked = footer[:-1] + alphabet[last | 1]
    assert unb64(tweaked) == unb64(footer)
    with pytest.raises(TicketMalformed):
        verifier.verify(f"v4.public.{body}.{tweaked}", now=NOW)
    with pytest.raises(TicketMalformed):
        verifier.verify(f"v4.public.{body}.", now=NOW)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'"s"', b"\xc3\x28", b"NaN"])
def test_signed_payload_that_is_not_a_json_object_is_malformed(
    pair: SigningKeyPair, verifier: TicketVerifier, payload: bytes
) -> None:
    with pytest.raises(TicketMalformed):
        verifier.verify(sign_claims(pair, payload), now=NOW)


@pytest.mark.parametrize(
    "override",
    [
        {"sub": None},
        {"sub": ""},
        {"sub": "a" * 65},
        {"sub": "bad id"},
        {"sub": "é"},
        {"sub": 7},
        {"name": None},
        {"name": ""},
        {"name": "\x00\x01 \u202e"},
        {"name": "n" * 33},
        {"name": ["Ann"]},
        {"name": "\ud800"},
        {"role": None},
        {"role": "admin"},
        {"role": ["player"]},
        {"room": "AB CD"},
        {"room": 1234},
        {"room": "R" * 17},
        {"exp": None},
        {"exp": 1700003600},
        {"exp": "2023-11-14 23:13:20+00:00"},
        {"exp": "2023-11-14T23:13:20"},
        {"exp": "2023-13-14T23:13:20Z"},
        {"exp": "2023-11-14T23:13:60Z"},
        {"exp": "2023-11-14T23:13:20+24:00"},
        {"exp": "٢٠٢٣-11-14T23:13:20Z"},
        {"nbf": "yesterday"},
        {"iat": False},
        {"nbf": "2023-11-14T23:13:20Z"},
    ],
)
def test_bad_claims(
    pair: SigningKeyPair, verifier: TicketVerifier, override: dict[str, object]
) -> None:
    with pytest.raises(TicketBadClaims) as info:
        verifier.verify(sign_claims(pair, good_claims(**override)), now=NOW)
    assert info.value.code == "ticket_bad_claims"


def test_duplicate_claims_are_refused(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    payload = json.dumps(good_claims()).encode()[:-1] + b', "role": "host"}'
    with pytest.raises(TicketMalformed):
        verifier.verify(sign_claims(pair, payload), now=NOW)


def test_rfc3339_offsets_and_fractions(pair: SigningKeyPair, verifier: TicketVerifier) -> None:
    claims = good_claims(
        nbf="2023-11-15T00:13:20.5+02:00", exp="2023-11-14t18:13:20.123456789-05:00", iat=None
    )
    ticket = verifier.verify(sign_claims(pair, claims), now=NOW + 1)
    assert ticket.not_before == NOW + 0.5
    assert ticket.expires == pytest.approx(NOW + 3600.123456789)
    assert ticket.issued is None
    no_nbf = verifier.verify(sign_claims(pair, good_claims(nbf=None)), now=NOW)
    assert no_nbf.not_before is None


def test_statistics_count_accepted_and_rejected(pair: SigningKeyPair) -> None:
    verifier = TicketVerifier({pair.kid: pair.verify_key})
    verifier.verify(mint(pair), now=NOW)
    for _ in range(2):
        with pytest.raises(TicketExpired):
            verifier.verify(mint(pair, ttl=1), now=NOW + 100)
    with pytest.raises(TicketMalformed):
        verifier.verify("nope")
    stats = verifier.statistics()
    assert stats.verified == 1
    assert dict(stats.rejected) == {"ticket_expired": 2, "ticket_malformed": 1}


# --- minting and verifier construction errors (the caller's fault) ---------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"player_id": ""},
        {"player_id": "has space"},
        {"player_id": "x" * 65},
        {"name": "\x00\x1b"},
        {"name": "n" * 33},
        {"room": "AB/CD"},
        {"role": "admin"},
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": float("inf")},
        {"ttl": float("nan")},
        {"now": float("nan")},
        {"now": 1e20},
        {"not_before": NOW + 3600},
    ],
)
def test_mint_rejects_bad_arguments(pair: SigningKeyPair, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        mint(pair, **kw)


def test_mint_accepts_a_bare_nacl_signing_key(pair: SigningKeyPair) -> None:
    token = mint_ticket(pair.signing_key, player_id="p", name="n", now=NOW)
    assert TicketVerifier({pair.kid: pair.verify_key}).verify(token, now=NOW).kid == pair.kid


def test_mint_defaults_to_the_wall_clock(pair: SigningKeyPair) -> None:
    ticket = TicketVerifier({pair.kid: pair.verify_key}).verify(
        mint_ticket(pair, player_id="p", name="n", ttl=60)
    )
    assert abs(ticket.expires - (time.time() + 60)) < 5


def test_verifier_refuses_bad_configuration(
    pair: SigningKeyPair, other_pair: SigningKeyPair
) -> None:
    with pytest.raises(ValueError):
        TicketVerifier({})
    with pytest.raises(ValueError):
        TicketVerifier({pair.kid: other_pair.verify_key})
    with pytest.raises(ValueError):
        TicketVerifier({pair.kid: pair.verify_key}, leeway=-1)
    with pytest.raises(ValueError):
        TicketVerifier({pair.kid: pair.verify_key}, leeway=float("nan"))


def test_signing_key_pair_never_prints_its_secret(pair: SigningKeyPair) -> None:
    assert pair.secret_paserk()[len("k4.secret.") :] not in repr(pair)
    assert pair.kid in repr(pair)


# --- key files -------------------------------------------------------------------------


def test_keygen_files_modes_and_round_trip(tmp_path: os.PathLike[str]) -> None:
    secret_path, public_path = write_keypair(os.path.join(tmp_path, "keys"), "relay-2024")
    assert secret_path.name == "relay-2024.secret"
    assert public_path.name == "relay-2024.public"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret_path.parent.stat().st_mode) == 0o700
    assert secret_path.read_text().startswith("k4.secret.")
    assert public_path.read_text().startswith("k4.public.")
    pair = load_signing_key(secret_path)
    keys = load_verify_keys([public_path])
    assert list(keys) == [pair.kid]
    token = mint_ticket(pair, player_id="p", name="n", now=NOW)
    assert TicketVerifier(keys).verify(token, now=NOW).kid == pair.kid


def test_keygen_never_overwrites(tmp_path: os.PathLike[str]) -> None:
    secret_path, _ = write_keypair(tmp_path, "k")
    before = secret_path.read_text()
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(tmp_path, "k")
    assert secret_path.read_text() == before
    secret_path.unlink()
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(tmp_path, "k")
    assert not secret_path.exists()


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "sp ace"])
def test_keygen_refuses_unsafe_names(tmp_path: os.PathLike[str], name: str) -> None:
    with pytest.raises(KeyFileError):
        write_keypair(tmp_path, name)


def test_key_loading_errors_name_the_file(tmp_path: os.PathLike[str]) -> None:
    secret_path, public_path = write_keypair(tmp_path, "k")
    with pytest.raises(KeyFileError, match="secret key"):
        load_verify_keys([secret_path])
    with pytest.raises(KeyFileError, match=r"k4\.secret"):
        load_signing_key(public_path)
    missing = os.path.join(tmp_path, "missing.public")
    with pytest.raises(KeyFileError, match=r"missing\.public"):
        load_verify_keys([missing])
    cases = {
        "short.secret": "k4.secret." + b64(bytes(32)),
        "junk.secret": "k4.secret.!!!",
        "binary.secret": "\xff\xfe",
        "huge.secret": "k4.secret." + "A" * 5000,
    }
    for name, text in cases.items():
        path = os.path.join(tmp_path, name)
        with open(path, "w", encoding="latin-1") as f:
            f.write(text)
        with pytest.raises(KeyFileError, match=name):
            load_signing_key(path)


def test_secret_key_with_a_foreign_public_half_is_refused(
    pair: SigningKeyPair, other_pair: SigningKeyPair
) -> None:
    raw = bytes(pair.signing_key) + bytes(other_pair.verify_key)
    with pytest.raises(KeyFileError, match="does not match"):
        SigningKeyPair.from_paserk("k4.secret." + b64(raw))


def test_public_paserk_parsing() -> None:
    with pytest.raises(KeyFileError):
        verify_key_from_paserk("k4.public." + b64(bytes(31)))
    with pytest.raises(KeyFileError):
        verify_key_from_paserk("k2.public." + b64(bytes(32)))
    assert bytes(verify_key_from_paserk("k4.public." + b64(bytes(32)))) == bytes(32)


# --- interop with pyseto (an independent implementation) -------------------------------


def pyseto_keys(pair: SigningKeyPair) -> tuple[object, object]:
    """The same key pair as pyseto objects, built from PEM (not from our PASERK code)."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(pair.signing_key))
    pem_secret = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem_public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return (
        pyseto.Key.new(version=4, purpose="public", key=pem_secret),
        pyseto.Key.new(version=4, purpose="public", key=pem_public),
    )


def test_pyseto_agrees_on_paserk_strings_and_key_ids(pair: SigningKeyPair) -> None:
    secret, public = pyseto_keys(pair)
    assert public.to_paserk() == pair.public_paserk()
    assert secret.to_paserk() == pair.secret_paserk()
    assert public.to_paserk_id() == pair.kid
    # And the other way: keys pyseto writes load with ours.
    assert SigningKeyPair.from_paserk(secret.to_paserk()).kid == pair.kid
    assert key_id(verify_key_from_paserk(public.to_paserk())) == pair.kid


def test_tickets_we_mint_verify_in_pyseto(pair: SigningKeyPair) -> None:
    _, public = pyseto_keys(pair)
    # pyseto checks exp against the wall clock, so this ticket is minted on it.
    token = mint_ticket(pair, player_id="p-9", name="Ann", room="ABCD", ttl=600)
    decoded = pyseto.decode(public, token, deserializer=json)
    assert decoded.payload["sub"] == "p-9"
    assert decoded.payload["room"] == "ABCD"
    assert decoded.footer == {"kid": pair.kid}
    with_ia = mint_ticket(pair, player_id="p", name="n", implicit_assertion=b"ctx")
    assert pyseto.decode(public, with_ia, implicit_assertion=b"ctx").version == "v4"
    with pytest.raises(pyseto.VerifyError):
        pyseto.decode(public, with_ia, implicit_assertion=b"other")


def test_tickets_pyseto_mints_verify_with_ours(pair: SigningKeyPair) -> None:
    secret, _ = pyseto_keys(pair)
    claims = good_claims(room="ABCD", role="spectator")
    token = pyseto.encode(secret, claims, footer={"kid": pair.kid}, serializer=json)
    verifier = TicketVerifier({pair.kid: pair.verify_key})
    ticket = verifier.verify(token.decode(), room="ABCD", now=NOW)
    assert (ticket.player_id, ticket.role, ticket.expires) == ("p-1", "spectator", NOW + 3600)
    with_ia = pyseto.encode(
        secret, claims, footer={"kid": pair.kid}, serializer=json, implicit_assertion=b"ctx"
    ).decode()
    bound = TicketVerifier({pair.kid: pair.verify_key}, implicit_assertion=b"ctx")
    assert bound.verify(with_ia, now=NOW).role == "spectator"
    with pytest.raises(TicketBadSignature):
        verifier.verify(with_ia, now=NOW)


def test_pyseto_generated_key_files_work_with_ours(tmp_path: os.PathLike[str]) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    theirs = pyseto.Key.new(version=4, purpose="public", key=pem)
    path = os.path.join(tmp_path, "theirs.secret")
    with open(path, "w") as f:
        f.write(theirs.to_paserk() + "\n")
    ours = load_signing_key(path)
    assert ours.kid == theirs.to_peer_paserk_id()


# --- fuzzing: verify returns a Ticket or raises TicketError, nothing else --------------

FUZZ = settings(deadline=None)

_FUZZ_PAIR = SigningKeyPair(nacl.signing.SigningKey(bytes(range(32))))
_FUZZ_TOKEN = mint_ticket(_FUZZ_PAIR, player_id="p-1", name="Ann", room="ABCD", now=NOW)
_FUZZ_VERIFIER = TicketVerifier({_FUZZ_PAIR.kid: _FUZZ_PAIR.verify_key})


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(text: str) -> None:
    for candidate in (text, "v4.public." + text):
        try:
            _FUZZ_VERIFIER.verify(candidate, room="ABCD", now=NOW)
        except TicketError:
            pass


@st.composite
def mutations(draw: st.DrawFn, token: str) -> str:
    chars = list(token)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "delete", "insert", "truncate", "append"]))
        at = draw(st.integers(0, max(len(chars) - 1, 0)))
        alphabet = st.sampled_from("AZaz09-_.=+/ \x00é")
        if kind == "replace" and chars:
            chars[at] = draw(alphabet)
        elif kind == "delete" and chars:
            del chars[at]
        elif kind == "insert":
            chars.insert(at, draw(alphabet))
        elif kind == "truncate":
            del chars[at:]
        else:
            chars.extend(draw(st.text(max_size=8)))
    return "".join(chars)


@FUZZ
@given(mutations(_FUZZ_TOKEN))
def test_fuzz_mutated_tokens_are_always_rejected(mutated: str) -> None:
    if mutated == _FUZZ_TOKEN:
        assert _FUZZ_VERIFIER.verify(mutated, now=NOW).player_id == "p-1"
        return
    # One spelling per token and a signature over every byte: any change is refused.
    with pytest.raises(TicketError):
        _FUZZ_VERIFIER.verify(mutated, room="ABCD", now=NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
claim_values = json_values | st.sampled_from(
    [
        "2023-11-14T23:13:20Z",
        "2023-11-14T22:13:20+00:00",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "player",
        "host",
        "ABCD",
    ]
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["sub", "name", "room", "role", "exp", "nbf", "iat", "x"]), claim_values
    ),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
)
def test_fuzz_signed_claims(override: dict[str, object], now: float) -> None:
    token = sign_claims(_FUZZ_PAIR, {**good_claims(), **override})
    try:
        ticket = _FUZZ_VERIFIER.verify(token, room="ABCD", now=now)
    except TicketError:
        return
    assert isinstance(ticket, Ticket)
    assert ticket.role in {"player", "spectator", "host"}
    assert 1 <= len(ticket.name) <= 32


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=80))
def test_fuzz_signed_bytes(payload: bytes, footer: bytes) -> None:
    for foot in (footer, json.dumps({"kid": _FUZZ_PAIR.kid}).encode()):
        try:
            _FUZZ_VERIFIER.verify(paseto_sign(_FUZZ_PAIR.signing_key, payload, foot), now=NOW)
        except TicketError:
            pass


def test_regression_deeply_nested_signed_payload(pair: SigningKeyPair) -> None:
    verifier = TicketVerifier({pair.kid: pair.verify_key})
    with pytest.raises(TicketMalformed):
        verifier.verify(sign_claims(pair, b"[" * 1200 + b"]" * 1200), now=NOW)
