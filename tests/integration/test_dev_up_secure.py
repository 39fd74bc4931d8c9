"""`talos dev up --secure`: a throwaway CA, TLS brokers that require tokens, an admin token,
and the printed instructions work as printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from talos.security.tls import ENV_CA, ENV_TOKEN_FILE

from .test_dev_up import DevUp, dev_dir  # noqa: F401  (the fixture)


def talos(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talos", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_dev_up_secure_prints_working_credentials(dev_dir: Path) -> None:  # noqa: F811
    dev = DevUp(dev_dir, "--brokers", "1", "--secure")
    try:
        bootstrap = dev.wait_line(r"bootstrap:\s+(\S+)", timeout=120).group(1)
        found = dev.wait_line(rf"export {ENV_CA}=(\S+) {ENV_TOKEN_FILE}=(\S+)")
        ca, token_file = found.group(1), found.group(2)
        assert Path(ca).is_file() and Path(token_file).is_file()
        assert oct(Path(token_file).stat().st_mode & 0o777) == "0o600"
        dev.wait_line(r"talos token create --zookeeper \S+ --tenant shop")

        base = {k: v for k, v in os.environ.items() if not k.startswith("TALOS_")}
        base["TALOS_BOOTSTRAP"] = bootstrap
        admin = {**base, ENV_CA: ca, ENV_TOKEN_FILE: token_file}
        created = talos(admin, "topic", "create", "orders", "--partitions", "1", "--wait")
        assert created.returncode == 0, created.stderr

        plaintext = talos(base, "topic", "list")
        assert plaintext.returncode == 1
        assert "requires TLS and this client connects in plaintext" in plaintext.stderr

    finally:
        assert dev.stop() == 0
