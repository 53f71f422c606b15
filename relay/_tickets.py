"""Join tickets: PASETO v4.public tokens signed with Ed25519, and their key files.

An operator (or a game backend) mints a ticket with the secret key; the relay checks it
with the public keys it was given, picking the key by the PASERK id in the footer.

Whose fault: every ``TicketError`` is the fault of the client that presented the token
(or of whoever minted it); the relay answers it with the error's ``code``. The tree::

    TicketError                (code)
    ├── TicketMalformed        ticket_malformed      not a v4.public token we can parse
    ├── TicketUnknownKey       ticket_unknown_key    footer kid is not one of our keys
    ├── TicketBadSignature     ticket_bad_signature  signature does not match (tampered)
    ├── TicketBadClaims        ticket_bad_claims     signed, but claims missing or invalid
    ├── TicketExpired          ticket_expired        now >= exp + leeway
    ├── TicketNotYetValid      ticket_not_yet_valid  now < nbf - leeway
    └── TicketWrongRoom        ticket_wrong_room     bound to another room than the one joined

``KeyFileError`` (a ``ValueError``) is the operator's fault: a key file that is missing,
unreadable, or not the PASERK string it should be.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import math
import os
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nacl.exceptions
import nacl.signing

__all__ = [
    "KeyFileError",
    "ROLES",
    "SigningKeyPair",
    "Ticket",
    "TicketBadClaims",
    "TicketBadSignature",
    "TicketError",
    "TicketExpired",
    "TicketMalformed",
    "TicketNotYetValid",
    "TicketUnknownKey",
    "TicketVerifier",
    "TicketVerifierStatistics",
    "TicketWrongRoom",
    "key_id",
    "load_signing_key",
    "load_verify_keys",
    "mint_ticket",
    "pae",
    "paseto_sign",
    "paseto_verify",
    "public_paserk",
    "verify_key_from_paserk",
    "write_keypair",
]

HEADER = "v4.public."
_HEADER_BYTES = HEADER.encode("ascii")
_SIG_SIZE = 64

#: Roles a ticket may carry.
ROLES = frozenset({"player", "spectator", "host"})

# Limits on untrusted input, checked before any parsing or cryptography so a hostile
# string costs the relay at most a few microseconds.
MAX_TICKET_CHARS = 4096
MAX_FOOTER_BYTES = 512
MAX_PLAYER_ID = 64
MAX_NAME = 32
MAX_ROOM = 16
MAX_KEY_FILE_BYTES = 4096

_PLAYER_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_ROOM_RE = re.compile(r"[A-Za-z0-9_\-]{1,16}")
_KEY_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_\-]*")
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(\.[0-9]{1,9})?([Zz]|[+\-][0-9]{2}:[0-9]{2})"
)
# Bidirectional-text controls (category Cf) let a name display reversed or hide text;
# they are removed along with the C0/C1 controls (category Cc).
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


# ---------------------------------------------------------------------------------------
# Errors


class TicketError(Exception):
    """Base of the errors a ticket check reports back to the client that presented it."""

    code = "ticket_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class TicketMalformed(TicketError):
    code = "ticket_malformed"


class TicketUnknownKey(TicketError):
    code = "ticket_unknown_key"


class TicketBadSignature(TicketError):
    code = "ticket_bad_signature"


class TicketBadClaims(TicketError):
    code = "ticket_bad_claims"


class TicketExpired(TicketError):
    code = "ticket_expired"


class TicketNotYetValid(TicketError):
    code = "ticket_not_yet_valid"


class TicketWrongRoom(TicketError):
    code = "ticket_wrong_room"


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not the PASERK string it should be (operator)."""


# ---------------------------------------------------------------------------------------
# Encoding helpers


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict unpadded base64url: alphabet only, and the canonical encoding only.

    Raises ValueError otherwise. Refusing non-canonical encodings (stray low bits in the
    last character) means one token has exactly one spelling.
    """
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not unpadded base64url") from exc
    if _b64encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _le64(n: int) -> bytes:
    # PASETO's LE64 clears the top bit so the value reads the same as a signed int64.
    return (n & 0x7FFF_FFFF_FFFF_FFFF).to_bytes(8, "little")


def pae(*pieces: bytes) -> bytes:
    """PASETO pre-authentication encoding: the count, then each piece prefixed by its length."""
    out = bytearray(_le64(len(pieces)))
    for piece in pieces:
        out += _le64(len(piece))
        out += piece
    return bytes(out)


def paseto_sign(
    signing_key: nacl.signing.SigningKey,
    message: bytes,
    footer: bytes = b"",
    implicit_assertion: bytes = b"",
) -> str:
    """Sign ``message`` into a ``v4.public.`` token (PASETO v4.public ``Sign``).

    The footer is sent in clear after the last dot; the implicit assertion is signed but
    never sent, so the verifier must supply the same bytes.
    """
    signed = signing_key.sign(pae(_HEADER_BYTES, message, footer, implicit_assertion))
    token = HEADER + _b64encode(message + signed.signature)
    if footer:
        token += "." + _b64encode(footer)
    return token


def _split(token: str) -> tuple[bytes, bytes, bytes]:
    """Split a token into (message, signature, footer), raising TicketMalformed."""
    if not isinstance(token, str):
        raise TicketMalformed("a ticket must be a string")
    if len(token) > MAX_TICKET_CHARS:
        raise TicketMalformed(f"ticket is longer than {MAX_TICKET_CHARS} characters")
    if not token.startswith(HEADER):
        raise TicketMalformed("not a v4.public PASETO token")
    parts = token[len(HEADER) :].split(".")
    if len(parts) > 2:
        raise TicketMalformed("too many dot-separated parts")
    try:
        body = _b64decode(parts[0])
        footer = _b64decode(parts[1]) if len(parts) == 2 else b""
    except ValueError as exc:
        raise TicketMalformed(f"bad base64url in ticket: {exc}") from None
    if len(parts) == 2 and not footer:
        # An empty footer is spelled without the trailing dot; one spelling per token.
        raise TicketMalformed("empty footer after a dot")
    if len(body) < _SIG_SIZE:
        raise TicketMalformed("ticket is shorter than a signature")
    return body[:-_SIG_SIZE], body[-_SIG_SIZE:], footer


def paseto_verify(
    verify_key: nacl.signing.VerifyKey, token: str, implicit_assertion: bytes = b""
) -> tuple[bytes, bytes]:
    """Check a ``v4.public.`` token and return its (message, footer).

    Raises TicketMalformed for anything that is not a v4.public token and
    TicketBadSignature when the signature does not match this key.
    """
    message, signature, footer = _split(token)
    _check_signature(verify_key, message, signature, footer, implicit_assertion)
    return message, footer


def _check_signature(
    verify_key: nacl.signing.VerifyKey,
    message: bytes,
    signature: bytes,
    footer: bytes,
    implicit_assertion: bytes,
) -> None:
    try:
        verify_key.verify(pae(_HEADER_BYTES, message, footer, implicit_assertion), signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise TicketBadSignature("signature does not match the key named in the footer") from None


def _loads_strict(data: bytes) -> Any:
    """JSON from UTF-8 bytes, refusing duplicate keys and NaN/Infinity; ValueError otherwise."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise ValueError("duplicate key in JSON object")
        return obj

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


# ---------------------------------------------------------------------------------------
# Time


def _format_time(t: float) -> str:
    """Unix time, floored to the second, as an RFC 3339 UTC string.

    Whole seconds because common verifiers compare against a clock truncated to the
    second: a fractional ``nbf`` would be refused there for up to a second.
    Raises ValueError for a time outside years 1-9999.
    """
    try:
        moment = _dt.datetime.fromtimestamp(math.floor(t), tz=_dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"time {t!r} is out of range") from None
    return moment.isoformat(timespec="seconds")


def _parse_time(value: object, claim: str) -> float:
    """An RFC 3339 date-time (with an explicit offset) as Unix time; TicketBadClaims otherwise."""
    if not isinstance(value, str):
        raise TicketBadClaims(f"claim {claim!r} must be an RFC 3339 string")
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        raise TicketBadClaims(f"claim {claim!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, offset = m.group(7), m.group(8)
    try:
        date = _dt.date(year, month, day)
        _dt.time(hour, minute, second)
    except ValueError:
        raise TicketBadClaims(f"claim {claim!r} is not a valid date-time") from None
    seconds = (date.toordinal() - _EPOCH_ORDINAL) * 86400 + hour * 3600 + minute * 60 + second
    if offset not in ("Z", "z"):
        off_h, off_m = int(offset[1:3]), int(offset[4:6])
        if off_h > 23 or off_m > 59:
            raise TicketBadClaims(f"claim {claim!r} has an invalid UTC offset")
        delta = off_h * 3600 + off_m * 60
        seconds -= delta if offset[0] == "+" else -delta
    return seconds + (float(fraction) if fraction else 0.0)


# ---------------------------------------------------------------------------------------
# Keys


def key_id(verify_key: nacl.signing.VerifyKey) -> str:
    """The PASERK ``k4.pid.`` id of a public key: what ticket footers name as ``kid``."""
    paserk = "k4.public." + _b64encode(bytes(verify_key))
    digest = hashlib.blake2b(("k4.pid." + paserk).encode("ascii"), digest_size=33).digest()
    return "k4.pid." + _b64encode(digest)


@dataclass(frozen=True, slots=True, repr=False)
class SigningKeyPair:
    """An Ed25519 key pair with its PASERK id; the secret half never prints."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> SigningKeyPair:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_paserk(cls, paserk: str) -> SigningKeyPair:
        """Read a ``k4.secret.`` PASERK string; raises KeyFileError if it is not one."""
        prefix = "k4.secret."
        if not isinstance(paserk, str) or not paserk.startswith(prefix):
            raise KeyFileError("not a k4.secret PASERK string")
        try:
            raw = _b64decode(paserk[len(prefix) :])
        except ValueError:
            raise KeyFileError("k4.secret key is not valid base64url") from None
        if len(raw) != 64:
            raise KeyFileError("k4.secret key must hold 64 bytes (seed and public key)")
        signing_key = nacl.signing.SigningKey(raw[:32])
        # The stored public half must be the one the seed derives, or the file is corrupt.
        if not hmac.compare_digest(bytes(signing_key.verify_key), raw[32:]):
            raise KeyFileError("k4.secret key: public half does not match the seed")
        return cls(signing_key)

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.signing_key.verify_key

    @property
    def kid(self) -> str:
        return key_id(self.signing_key.verify_key)

    def secret_paserk(self) -> str:
        """``k4.secret.`` + base64url(seed || public key)."""
        raw = bytes(self.signing_key) + bytes(self.signing_key.verify_key)
        return "k4.secret." + _b64encode(raw)

    def public_paserk(self) -> str:
        return public_paserk(self.signing_key.verify_key)

    def __repr__(self) -> str:
        return f"SigningKeyPair(kid={self.kid!r})"


def public_paserk(verify_key: nacl.signing.VerifyKey) -> str:
    """``k4.public.`` + base64url(32-byte public key)."""
    return "k4.public." + _b64encode(bytes(verify_key))


def verify_key_from_paserk(paserk: str) -> nacl.signing.VerifyKey:
    """Read a ``k4.public.`` PASERK string; raises KeyFileError if it is not one."""
    if isinstance(paserk, str) and paserk.startswith("k4.secret."):
        raise KeyFileError("this is a secret key; give the relay the .public file")
    prefix = "k4.public."
    if not isinstance(paserk, str) or not paserk.startswith(prefix):
        raise KeyFileError("not a k4.public PASERK string")
    try:
        raw = _b64decode(paserk[len(prefix) :])
    except ValueError:
        raise KeyFileError("k4.public key is not valid base64url") from None
    if len(raw) != 32:
        raise KeyFileError("k4.public key must hold 32 bytes")
    return nacl.signing.VerifyKey(raw)


def _read_key_file(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {os.fspath(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"key file {os.fspath(path)!r} is too large to be a key")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {os.fspath(path)!r} is not ASCII text") from None


def load_signing_key(path: str | os.PathLike[str]) -> SigningKeyPair:
    """Load a ``NAME.secret`` file written by ``write_keypair``; raises KeyFileError."""
    text = _read_key_file(path)
    try:
        return SigningKeyPair.from_paserk(text)
    except KeyFileError as exc:
        raise KeyFileError(f"{os.fspath(path)!r}: {exc}") from None


def load_verify_keys(
    paths: Iterable[str | os.PathLike[str]],
) -> dict[str, nacl.signing.VerifyKey]:
    """Load ``NAME.public`` files into ``{kid: VerifyKey}`` for a TicketVerifier.

    Give several files to accept tickets from several keys during a rotation.
    Raises KeyFileError for an unreadable or invalid file.
    """
    keys: dict[str, nacl.signing.VerifyKey] = {}
    for path in paths:
        try:
            verify_key = verify_key_from_paserk(_read_key_file(path))
        except KeyFileError as exc:
            raise KeyFileError(f"{os.fspath(path)!r}: {exc}") from None
        keys[key_id(verify_key)] = verify_key
    return keys


def write_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Generate a key pair and write ``NAME.secret`` (mode 0600) and ``NAME.public``.

    Creates ``directory`` (mode 0700) if needed. Never overwrites: if either file exists,
    raises KeyFileError and writes nothing, so a key in use cannot be lost by accident.
    Returns (secret_path, public_path).
    """
    if not isinstance(name, str) or not _KEY_NAME_RE.fullmatch(name) or name.startswith("."):
        raise KeyFileError(f"key name {name!r}: use 1-64 letters, digits, '_', '-', '.'")
    base = Path(directory)
    secret_path, public_path = base / f"{name}.secret", base / f"{name}.public"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create key directory {str(base)!r}: {exc.strerror}") from None
    for path in (secret_path, public_path):
        if path.exists():
            raise KeyFileError(f"{str(path)!r} already exists; refusing to overwrite a key")
    pair = SigningKeyPair.generate()
    _write_new(secret_path, pair.secret_paserk() + "\n", 0o600)
    try:
        _write_new(public_path, pair.public_paserk() + "\n", 0o644)
    except KeyFileError:
        secret_path.unlink(missing_ok=True)
        raise
    return secret_path, public_path


def _write_new(path: Path, text: str, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{str(path)!r} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {str(path)!r}: {exc.strerror}") from None
    try:
        # The umask may have removed bits from ``mode`` but never added any; set it exactly.
        os.fchmod(fd, mode)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    os.close(fd)


# ---------------------------------------------------------------------------------------
# Claims


def _clean_name(name: str) -> str:
    """Drop control and bidi characters and surrounding whitespace from a display name."""
    if any(unicodedata.category(c) == "Cs" for c in name):
        raise ValueError("name contains a lone surrogate")
    kept = "".join(c for c in name if unicodedata.category(c) != "Cc" and c not in _BIDI_CONTROLS)
    return kept.strip()


def _check_player_id(player_id: object) -> str:
    if not isinstance(player_id, str) or not _PLAYER_ID_RE.fullmatch(player_id):
        raise ValueError(f"player id must be 1-{MAX_PLAYER_ID} characters of A-Z a-z 0-9 _ . : -")
    return player_id


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    cleaned = _clean_name(name)
    if not 1 <= len(cleaned) <= MAX_NAME:
        raise ValueError(f"name must be 1-{MAX_NAME} characters once control characters go")
    return cleaned


def _check_room(room: object) -> str | None:
    if room is None:
        return None
    if not isinstance(room, str) or not _ROOM_RE.fullmatch(room):
        raise ValueError(f"room code must be 1-{MAX_ROOM} characters of A-Z a-z 0-9 _ -")
    return room


def _check_role(role: object) -> str:
    if not isinstance(role, str) or role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(ROLES))}")
    return role  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Ticket:
    """The verified claims of a join ticket. Times are Unix seconds."""

    player_id: str
    name: str
    room: str | None
    role: str
    expires: float
    not_before: float | None
    kid: str
    issued: float | None = None


def mint_ticket(
    signing_key: SigningKeyPair | nacl.signing.SigningKey,
    *,
    player_id: str,
    name: str,
    room: str | None = None,
    role: str = "player",
    ttl: float = 3600,
    not_before: float | None = None,
    now: float | None = None,
    implicit_assertion: bytes = b"",
) -> str:
    """Sign a join ticket valid from ``not_before`` (default ``now``) until ``now + ttl``.

    Times are written in whole seconds, floored (so the ticket never outlives ``ttl``).

    ``room`` binds the ticket to one room code; None lets it join any room. The footer
    carries the key's PASERK id so verifiers holding several keys pick the right one.
    Raises ValueError (the caller's fault) for an invalid player id, name, room, role,
    ttl or time.
    """
    pair = signing_key if isinstance(signing_key, SigningKeyPair) else SigningKeyPair(signing_key)
    now = time.time() if now is None else now
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
    nbf = now if not_before is None else not_before
    exp = now + ttl
    for label, value in (("now", now), ("not_before", nbf), ("expiry", exp)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite Unix time")
    if math.floor(nbf) >= math.floor(exp):
        raise ValueError("the ticket must be valid for at least a second before now + ttl")
    claims = {
        "sub": _check_player_id(player_id),
        "name": _check_name(name),
        "role": _check_role(role),
        "iat": _format_time(now),
        "nbf": _format_time(nbf),
        "exp": _format_time(exp),
    }
    room = _check_room(room)
    if room is not None:
        claims["room"] = room
    message = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    footer = json.dumps({"kid": pair.kid}, separators=(",", ":")).encode("ascii")
    return paseto_sign(pair.signing_key, message, footer, implicit_assertion)


# ---------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, slots=True)
class TicketVerifierStatistics:
    """Counters of a TicketVerifier: tickets accepted, and rejections by error code."""

    verified: int
    rejected: Mapping[str, int]


class TicketVerifier:
    """Checks join tickets against a set of public keys keyed by PASERK id.

    ``keys`` maps each ``k4.pid.`` id to its VerifyKey (``load_verify_keys`` builds it);
    holding the old and the new key during a rotation accepts tickets from both.
    ``leeway`` (seconds) absorbs clock skew between the minter and the relay on both
    ``exp`` and ``nbf``. Raises ValueError on construction for an empty key set, a kid
    that does not name its key, or a bad leeway.
    """

    __slots__ = ("_implicit_assertion", "_keys", "_leeway", "_rejected", "_verified")

    def __init__(
        self,
        keys: Mapping[str, nacl.signing.VerifyKey],
        *,
        leeway: float = 5.0,
        implicit_assertion: bytes = b"",
    ) -> None:
        if not keys:
            raise ValueError("a TicketVerifier needs at least one public key")
        for kid, verify_key in keys.items():
            if not isinstance(verify_key, nacl.signing.VerifyKey):
                raise ValueError(f"key for {kid!r} is not a nacl VerifyKey")
            if key_id(verify_key) != kid:
                raise ValueError(f"kid {kid!r} is not the PASERK id of its key")
        if not isinstance(leeway, (int, float)) or not (0 <= leeway < math.inf):
            raise ValueError("leeway must be a finite number of seconds >= 0")
        self._keys = dict(keys)
        self._leeway = float(leeway)
        self._implicit_assertion = bytes(implicit_assertion)
        self._verified = 0
        self._rejected: dict[str, int] = {}

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def statistics(self) -> TicketVerifierStatistics:
        return TicketVerifierStatistics(self._verified, MappingProxyType(dict(self._rejected)))

    def verify(self, token: str, *, room: str | None = None, now: float | None = None) -> Ticket:
        """Check a ticket and return its claims.

        ``room`` is the room code being joined: a ticket bound to another room raises
        TicketWrongRoom; None skips that check (the caller then compares ``Ticket.room``
        itself). ``now`` is Unix time (default: the wall clock).

        Raises only TicketError subclasses, whatever ``token`` holds; checks run in the
        order malformed, unknown key, signature, claims, time, room.
        """
        try:
            ticket = self._verify(token, room, time.time() if now is None else now)
        except TicketError as exc:
            self._rejected[exc.code] = self._rejected.get(exc.code, 0) + 1
            raise
        self._verified += 1
        return ticket

    def _verify(self, token: str, room: str | None, now: float) -> Ticket:
        message, signature, footer = _split(token)
        kid = _footer_kid(footer)
        verify_key = self._keys.get(kid)
        if verify_key is None:
            raise TicketUnknownKey("the ticket is signed with a key this relay does not hold")
        _check_signature(verify_key, message, signature, footer, self._implicit_assertion)
        try:
            claims = _loads_strict(message)
        except ValueError as exc:
            raise TicketMalformed(f"ticket payload is not JSON: {exc}") from None
        if not isinstance(claims, dict):
            raise TicketMalformed("ticket payload is not a JSON object")
        ticket = _claims_to_ticket(claims, kid)
        if now >= ticket.expires + self._leeway:
            raise TicketExpired("the ticket has expired")
        if ticket.not_before is not None and now < ticket.not_before - self._leeway:
            raise TicketNotYetValid("the ticket is not valid yet")
        if room is not None and ticket.room is not None and ticket.room != room:
            raise TicketWrongRoom(f"the ticket is for another room than {room!r}")
        return ticket


def _footer_kid(footer: bytes) -> str:
    # The footer is read before the signature is checked, so it is bounded and parsed
    # strictly; only its "kid" is used, and only to pick the key.
    if not footer:
        raise TicketMalformed("ticket has no footer naming its key")
    if len(footer) > MAX_FOOTER_BYTES:
        raise TicketMalformed(f"ticket footer is longer than {MAX_FOOTER_BYTES} bytes")
    try:
        data = _loads_strict(footer)
    except ValueError:
        raise TicketMalformed("ticket footer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("kid"), str):
        raise TicketMalformed('ticket footer must be a JSON object with a string "kid"')
    return data["kid"]


def _claims_to_ticket(claims: dict[str, Any], kid: str) -> Ticket:
    try:
        player_id = _check_player_id(claims.get("sub"))
        name = _check_name(claims.get("name"))
        room = _check_room(claims.get("room"))
        role = _check_role(claims.get("role"))
    except ValueError as exc:
        raise TicketBadClaims(str(exc)) from None
    if "exp" not in claims:
        raise TicketBadClaims("ticket has no exp claim")
    expires = _parse_time(claims["exp"], "exp")
    not_before = _parse_time(claims["nbf"], "nbf") if "nbf" in claims else None
    issued = _parse_time(claims["iat"], "iat") if "iat" in claims else None
    if not_before is not None and not_before >= expires:
        raise TicketBadClaims("ticket nbf is not before its exp")
    return Ticket(
        player_id=player_id,
        name=name,
        room=room,
        role=role,
        expires=expires,
        not_before=not_before,
        kid=kid,
        issued=issued,
    )
