"""Tokens (hashed, verified in constant time), client/server TLS settings and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from talos.errors import InvalidArgument, TlsError, Unauthenticated
from talos.security import pki
from talos.security.interceptor import bearer_token
from talos.security.tls import ClientSecurity, diagnose, server_tls
from talos.security.tokens import digest, new_token, token_id_of, validate_token_id, verify


def test_a_new_token_is_stored_only_as_its_hash() -> None:
    token, record = new_token("shop", superuser=False, now_ms=5)
    assert token.startswith(f"talos_{record.token_id}_")
    assert token not in str(record.to_json())
    assert record.sha256 == digest(token)
    assert verify(token, record) == record


def test_a_wrong_secret_or_unknown_id_or_malformed_token_is_refused_with_why() -> None:
    token, record = new_token("shop", superuser=False, now_ms=5)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match=f"token {record.token_id}: wrong secret"):
        verify(forged, record)
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        verify(token, None)
    with pytest.raises(Unauthenticated, match="malformed"):
        token_id_of("hunter2")
    with pytest.raises(InvalidArgument, match="id: "):
        validate_token_id("nope")


def test_the_bearer_token_is_read_from_the_authorization_header() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    with pytest.raises(Unauthenticated, match="no token: this broker requires authentication"):
        bearer_token([("user-agent", "x")])
    with pytest.raises(Unauthenticated, match="expected 'Bearer <token>'"):
        bearer_token([("authorization", "Basic abc")])


def test_a_token_implies_tls_and_cert_needs_key() -> None:
    assert not ClientSecurity().tls
    assert ClientSecurity(token="t").tls
    assert "s3cr3t" not in repr(ClientSecurity(token="s3cr3t"))  # never logged
    with pytest.raises(InvalidArgument, match="tls-client-key: "):
        ClientSecurity(cert="c.pem")


def test_client_security_from_the_environment_reads_the_token_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("talos_x\n")
    security = ClientSecurity.from_env({"TALOS_TOKEN_FILE": str(tmp_path / "t")})
    assert security.token == "talos_x" and security.tls
    with pytest.raises(InvalidArgument, match="token-file: cannot read"):
        ClientSecurity.from_env({"TALOS_TOKEN_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InvalidArgument, match="is empty"):
        ClientSecurity.from_env({"TALOS_TOKEN_FILE": str(tmp_path / "empty")})


def test_server_tls_needs_both_files_and_refuses_non_pem(tmp_path: Path) -> None:
    assert server_tls("", "") is None
    with pytest.raises(InvalidArgument, match="tls-key: --tls-cert and --tls-key go together"):
        server_tls("c.pem", "")
    with pytest.raises(InvalidArgument, match="tls-client-ca: needs --tls-cert"):
        server_tls("", "", "ca.pem")
    files = pki.generate(tmp_path)
    assert server_tls(files.server_cert, files.server_key, files.ca) is not None
    server_tls(files.server_cert, files.server_key).credentials()  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match=r"tls-cert: .* holds no PEM certificate"):
        server_tls(files.server_key, files.server_key).credentials()  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match=r"tls-key: .* not an unencrypted PEM private key"):
        server_tls(files.server_cert, files.ca).credentials()  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match="tls-ca: cannot read"):
        ClientSecurity(ca=str(tmp_path / "missing.pem")).channel_credentials()


def test_grpc_handshake_failures_become_tls_errors_that_say_what_to_do() -> None:
    secure = ClientSecurity(ca="/ca.pem")
    untrusted = diagnose("h:1", secure, "Tls handshake failed: CERTIFICATE_VERIFY_FAILED: x")
    assert isinstance(untrusted, TlsError) and "not trusted by /ca.pem" in untrusted.message
    plain_broker = diagnose("h:1", secure, "SSL_ERROR_SSL: WRONG_VERSION_NUMBER")
    assert isinstance(plain_broker, TlsError) and "does not speak TLS" in plain_broker.message
    assert diagnose("127.0.0.1:1", secure, "Connection refused") is None  # just down
    assert diagnose("127.0.0.1:1", ClientSecurity(), "Socket closed") is None  # nobody there


def test_global_client_flags_do_not_swallow_subcommand_options() -> None:
    from talos.cli import build_parser

    args = build_parser().parse_args(
        ["--token", "t", "export", "parquet", "orders", "--to", "out", "--to-offset", "5"]
    )
    assert (args.token, args.to, args.to_offset) == ("t", "out", 5)
    args = build_parser().parse_args(["export", "parquet", "orders", "--to", "out"])
    assert (args.token, args.to) == (None, "out")
