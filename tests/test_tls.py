"""In-process TLS: ``--tls-cert``/``--tls-key`` serve ``wss://`` on the websocket transport."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from relay_fixtures import fast_config, start_relay

from relay import ConfigError
from relay.client import connect


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roomwire test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_a_client_plays_over_wss(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    config = fast_config(tmp_path, "", tls_cert=str(cert), tls_key=str(key))
    assert config.transport == "websocket"  # TLS picks the websocket transport
    trust = ssl.create_default_context(cafile=str(cert))
    async with start_relay(config) as r:
        url = f"wss://127.0.0.1:{r.port}"
        async with connect(url, ssl_context=trust) as a, connect(url, ssl_context=trust) as b:
            code = await a.create("arena")
            await b.join(code)
            seq = await a.send_input({"x": 12.5})
            await b.wait_for(lambda c: c.state["players"][a.player_id]["seq"] >= seq)
            assert b.state["players"][a.player_id]["x"] == 12.5


async def test_a_client_that_does_not_trust_the_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    config = fast_config(tmp_path, "websocket", tls_cert=str(cert), tls_key=str(key))
    async with start_relay(config) as r:
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", r.port, ssl_context=ssl.create_default_context()
        )
        try:
            with pytest.raises(trio.BrokenResourceError) as caught:
                await stream.do_handshake()
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        finally:
            await trio.aclose_forcefully(stream)
        # the relay keeps serving clients that do trust it
        trust = ssl.create_default_context(cafile=str(cert))
        async with connect(f"wss://127.0.0.1:{r.port}", ssl_context=trust) as client:
            assert client.player_id


def test_tls_is_refused_on_the_fast_transport(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with pytest.raises(ConfigError, match="websocket"):
        fast_config(tmp_path, "fast", tls_cert=str(cert), tls_key=str(key))
