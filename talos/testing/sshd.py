"""A real OpenSSH server on a loopback port, for drill tests.

Debian's ``openssh-server`` (installed by ``make system-deps``) runs as
``/usr/sbin/sshd -D -f CONFIG`` with a config, host key, authorized key and
pid file of its own in a temporary folder, so the tests see what an operator
sees on a real host: commands run by the user's shell in a session of
their own, and nothing is killed when a channel closes.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from talos.testing.process import Server
from talos.testing.zookeeper import free_port

SSHD = "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """None when sshd can run here, else why not."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (Debian package openssh-server; `make system-deps`)"
    if shutil.which("setsid") is None:
        return "setsid (util-linux) is missing"
    return None


class SshServer(Server):
    """``sshd -D`` on 127.0.0.1:``port`` that lets the current user in with one key.

    ``known_hosts`` holds the server's host key; ``client_key`` the private key
    whose public half is the only authorized key.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.client_key = self.root / "id_ed25519"
        self.authorized_keys = self.root / "authorized_keys"
        self.known_hosts = self.root / "known_hosts"
        self.pid_file = self.root / "sshd.pid"
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _write_files(self) -> None:
        import asyncssh

        host = asyncssh.generate_private_key("ssh-ed25519")
        host.write_private_key(str(self.host_key))
        self.host_key.chmod(0o600)
        client = asyncssh.generate_private_key("ssh-ed25519")
        client.write_private_key(str(self.client_key))
        self.client_key.chmod(0o600)
        self.authorized_keys.write_bytes(client.export_public_key())
        self.known_hosts.write_text(
            f"[127.0.0.1]:{self.port} {host.export_public_key().decode().strip()}\n"
        )
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pid_file}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"AllowUsers {self.user}",
                    "StrictModes no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )

    def start(self, timeout_s: float = 10.0) -> SshServer:
        reason = sshd_available()
        if reason is not None:
            raise RuntimeError(reason)
        self._write_files()
        if os.geteuid() == 0:
            # sshd refuses to start without its privilege separation folder.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                    sock.settimeout(1.0)
                    if sock.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        output = self.log.read_text(errors="replace").strip()
        self.stop()
        raise RuntimeError(f"sshd did not start on 127.0.0.1:{self.port}: {output or 'no output'}")

    def stop(self) -> None:
        """Stop the listening sshd (each session's own sshd ends when its client disconnects)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
