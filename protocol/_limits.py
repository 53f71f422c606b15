"""Size limits applied to every decoded frame, so a small frame never costs much."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds checked while decoding; all configurable, all with safe defaults.

    ``max_frame_bytes`` is checked before any decoding starts (CBOR decoders
    have no length limits of their own). The container, string and binary
    lengths are enforced by the msgpack unpacker as it reads and by a walk of
    the decoded value for CBOR; ``max_depth`` bounds nesting for both.
    """

    max_frame_bytes: int = 64 * 1024
    max_depth: int = 16
    max_container_len: int = 4096
    max_str_len: int = 4096
    max_bin_len: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_depth", "max_container_len", "max_str_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_bin_len < 0:
            raise ValueError("max_bin_len must not be negative")


DEFAULT_LIMITS = Limits()
