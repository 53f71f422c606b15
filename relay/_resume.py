"""Resume tokens: a player's seat in a room, sealed so the client can hold it but not read it.

The relay hands one to each player on join; a client that reconnects presents it to take
its seat back. Tokens are encrypted and authenticated with a 32-byte XSalsa20-Poly1305
key (``nacl.secret.SecretBox``) that only the relay processes hold.

Whose fault: every ``ResumeError`` is the fault of the client that presented the token.
The tree::

    ResumeError            (code)
    ├── ResumeMalformed    resume_malformed   not a resume token at all
    ├── ResumeForged       resume_forged      does not decrypt with our key (forged,
    │                                         tampered, or sealed under another key)
    └── ResumeExpired      resume_expired     now >= expires
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.secret
import nacl.utils

from relay._tickets import KeyFileError

__all__ = [
    "KeyFileError",
    "ResumeClaims",
    "ResumeError",
    "ResumeExpired",
    "ResumeForged",
    "ResumeMalformed",
    "ResumeSealer",
    "load_or_create_key",
]

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE
# A version prefix, so a later format can live beside this one during an upgrade.
PREFIX = "rw1."
MAX_TOKEN_CHARS = 1024
MAX_FIELD = 64

_B64URL_RE = re.compile(r"[A-Za-z0-9_\-]+")
_MIN_SEALED = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES


class ResumeError(Exception):
    """Base of the errors a resume check reports back to the client that presented it."""

    code = "resume_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ResumeMalformed(ResumeError):
    code = "resume_malformed"


class ResumeForged(ResumeError):
    code = "resume_forged"


class ResumeExpired(ResumeError):
    code = "resume_expired"


@dataclass(frozen=True, slots=True)
class ResumeClaims:
    """What a resume token says: this player held this seat in this room. Unix seconds."""

    room: str
    player_id: str
    seat: int
    issued: float
    expires: float


def _check_text(label: str, value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FIELD:
        raise ValueError(f"{label} must be a string of 1-{MAX_FIELD} characters")
    return value


def _check_time(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{label} must be a finite Unix time")
    return float(value)


def _check_seat(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**16:
        raise ValueError("seat must be an int in 0..65535")
    return value


class ResumeSealer:
    """Seals and opens resume tokens with one SecretBox key.

    ``key`` is 32 bytes; None draws a random one, good for a single process whose tokens
    need not survive a restart. Processes that share a key (``load_or_create_key``) open
    each other's tokens, including tokens minted before a restart. Raises ValueError for
    a key of the wrong size.
    """

    __slots__ = ("_box", "_key")

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            key = nacl.utils.random(KEY_SIZE)
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
            raise ValueError(f"a resume key is {KEY_SIZE} bytes")
        self._key = bytes(key)
        self._box = nacl.secret.SecretBox(self._key)

    @property
    def key(self) -> bytes:
        return self._key

    def __repr__(self) -> str:
        return "ResumeSealer(key=<hidden>)"

    def seal(self, *, room: str, player_id: str, seat: int, issued: float, expires: float) -> str:
        """A url-safe token for these claims. Raises ValueError for invalid claims."""
        body = [
            _check_text("room", room),
            _check_text("player_id", player_id),
            _check_seat(seat),
            _check_time("issued", issued),
            _check_time("expires", expires),
        ]
        plain = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        # SecretBox draws a fresh random 24-byte nonce and prepends it.
        sealed = bytes(self._box.encrypt(plain))
        return PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str, *, now: float) -> ResumeClaims:
        """The claims of a token sealed with our key, if it has not expired at ``now``.

        Raises only ResumeError subclasses, whatever ``token`` holds: ResumeMalformed,
        ResumeForged, or ResumeExpired (``now >= expires``).
        """
        if not isinstance(token, str):
            raise ResumeMalformed("a resume token must be a string")
        if len(token) > MAX_TOKEN_CHARS:
            raise ResumeMalformed(f"resume token is longer than {MAX_TOKEN_CHARS} characters")
        if not token.startswith(PREFIX):
            raise ResumeMalformed("not a resume token")
        text = token[len(PREFIX) :]
        if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
            raise ResumeMalformed("resume token is not base64url")
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise ResumeMalformed("resume token is not base64url") from None
        if base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii") != text:
            # One spelling per token, so a token can serve as a key (e.g. to refuse reuse).
            raise ResumeMalformed("resume token is not canonical base64url")
        if len(sealed) < _MIN_SEALED:
            raise ResumeMalformed("resume token is too short")
        try:
            plain = self._box.decrypt(sealed)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise ResumeForged("resume token was not sealed by this relay") from None
        claims = _parse(plain)
        if now >= claims.expires:
            raise ResumeExpired("resume token has expired")
        return claims


def _parse(plain: bytes) -> ResumeClaims:
    # Only our own seal() produced this plaintext (it authenticated), so a failure here
    # means a format this version does not know, not an attack.
    try:
        body = json.loads(plain.decode("utf-8"))
        if not isinstance(body, list) or len(body) != 5:
            raise ValueError("unexpected shape")
        room, player_id, seat, issued, expires = body
        return ResumeClaims(
            room=_check_text("room", room),
            player_id=_check_text("player_id", player_id),
            seat=_check_seat(seat),
            issued=_check_time("issued", issued),
            expires=_check_time("expires", expires),
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ResumeMalformed("resume token holds claims in an unknown format") from None


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The resume key stored at ``path``, creating it (mode 0600) if the file is missing.

    The file holds the key as base64url text. Several processes starting together get
    the same key: the file appears complete or not at all, and the first writer wins.
    Raises KeyFileError if the file cannot be read or written or does not hold a key.
    """
    target = Path(path)
    try:
        return _read_key(target)
    except FileNotFoundError:
        pass
    key = nacl.utils.random(KEY_SIZE)
    text = base64.urlsafe_b64encode(key).rstrip(b"=") + b"\n"
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() never replaces an existing file: if another process won the race,
            # its key stands and we read that one.
            os.link(tmp, target)
        except FileExistsError:
            pass
    except OSError as exc:
        raise KeyFileError(f"cannot create resume key {str(target)!r}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    try:
        return _read_key(target)
    except FileNotFoundError:
        raise KeyFileError(f"resume key {str(target)!r} vanished after creation") from None


def _read_key(target: Path) -> bytes:
    """Raises FileNotFoundError if missing, KeyFileError if unreadable or invalid."""
    try:
        with open(target, "rb") as f:
            data = f.read(256)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot read resume key {str(target)!r}: {exc.strerror}") from None
    text = data.strip()
    try:
        if not _B64URL_RE.fullmatch(text.decode("ascii")):
            raise ValueError
        key = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (UnicodeDecodeError, binascii.Error, ValueError):
        raise KeyFileError(f"resume key {str(target)!r} is not base64url text") from None
    if len(key) != KEY_SIZE:
        raise KeyFileError(f"resume key {str(target)!r} must hold {KEY_SIZE} bytes")
    return key
