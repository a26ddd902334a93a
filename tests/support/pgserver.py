"""A private PostgreSQL server for the tests: Debian's postgresql package, a cluster in a temp
dir made with initdb, started with pg_ctl, reachable only through a Unix socket in that dir.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager


def postgres_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


@contextmanager
def postgres_server():
    """Yields a SQLAlchemy URL of an empty database `kabigate` on a fresh server; stops it after."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; scripts/bootstrap does)")
    workdir = tempfile.mkdtemp(prefix="kabigate-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        owner = pwd.getpwnam("postgres")
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    os.chmod(workdir, 0o755)  # the test process (root) connects through the socket in it
    data = os.path.join(workdir, "data")

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        # No TCP at all; fsync off: a test server's durability does not matter, its speed does.
        options = f"-c listen_addresses='' -c unix_socket_directories={workdir} -c fsync=off " \
                  "-c synchronous_commit=off -c full_page_writes=off"
        run(f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(workdir, "log"), "-w", "start")
        try:
            run(f"{bindir}/createdb", "-h", workdir, "-U", "postgres", "kabigate")
            yield f"postgresql://postgres@/kabigate?host={workdir}"
        finally:
            run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Another empty database on the same server; its URL."""
    host = url.split("host=", 1)[1]
    bindir = postgres_bindir()
    subprocess.run([f"{bindir}/createdb", "-h", host, "-U", "postgres", name], check=True, capture_output=True)
    return f"postgresql://postgres@/{name}?host={host}"
