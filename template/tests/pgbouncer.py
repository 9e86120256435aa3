"""A real PgBouncer in transaction pooling mode, in front of the suite's server.

Registered from `conftest.py` (`pytest_plugins`). The `pgbouncer` fixture starts the
`pgbouncer` binary (Debian/Ubuntu: `apt-get install pgbouncer`; macOS: `brew install
pgbouncer`) on a free local port with a throwaway configuration, and gives a function that
turns a database URL on the suite's server into the same database behind PgBouncer.

Without the binary the tests that use it are skipped, unless `REQUIRE_PGBOUNCER=1` (set
in CI), which makes them fail instead: CI must never skip them silently.
"""

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

# Few server connections for many clients: every client transaction may land on any of them.
SERVER_POOL_SIZE = 3
INSTALL_HINT = (
    "pgbouncer is not installed: `sudo apt-get install pgbouncer` (Debian/Ubuntu) or "
    "`brew install pgbouncer` (macOS). Set REQUIRE_PGBOUNCER=1 to fail instead of skipping."
)

BehindPgBouncer = Callable[[URL], URL]


def pgbouncer_binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_address(server: URL) -> tuple[str, int]:
    """Host (or unix socket directory) and port of the server, as libpq would read them."""
    host = server.host or str(server.query.get("host") or "/tmp")  # noqa: S108 (libpq default)
    return host, server.port or 5432


def run_as(host: str) -> list[str]:
    """PgBouncer refuses to run as root: as root, run it as the owner of the server's socket
    directory (who can reach the socket), or as `nobody` for a TCP server."""
    if os.geteuid() != 0:
        return []
    owner = pwd.getpwuid(Path(host).stat().st_uid).pw_name if host.startswith("/") else "nobody"
    return ["-u", owner]


def write_config(directory: Path, server: URL, port: int) -> Path:
    host, server_port = server_address(server)
    login = f"host={host} port={server_port} user={server.username or 'postgres'}"
    if server.password:
        login += f" password={server.password}"
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = {login}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        # Clients are not authenticated (local test only); PgBouncer logs in as `user`.
        "auth_type = any\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {SERVER_POOL_SIZE}\n"
        "max_client_conn = 500\n"
    )
    directory.chmod(0o755)
    config.chmod(0o644)
    return config


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not start listening on {port}:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


@pytest.fixture
def pgbouncer(postgres_server: URL, tmp_path: Path) -> Iterator[BehindPgBouncer]:
    """A fresh PgBouncer (transaction pooling, few server connections) for one test."""
    binary = pgbouncer_binary()
    if binary is None:
        if os.environ.get("REQUIRE_PGBOUNCER"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    port = free_port()
    config = write_config(tmp_path, postgres_server, port)
    command = [binary, *run_as(server_address(postgres_server)[0]), str(config)]
    log = tmp_path / "pgbouncer.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_until_listening(process, port, log)

        def behind_pgbouncer(url: URL) -> URL:
            return url.set(host="127.0.0.1", port=port, query={})

        yield behind_pgbouncer
    finally:
        process.terminate()
        process.wait()
