"""A private RabbitMQ broker for the tests: Debian's rabbitmq-server package, a node of its own in a
temp dir (its own mnesia, logs, config, Erlang cookie and epmd), listening on 127.0.0.1 only, on
free ports. The distribution's service, or another test's broker, is neither used nor disturbed.

`restart()` stops and starts the same node on the same ports with the same data: durable queues
and persistent messages survive it, as they survive a real broker's restart."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Self

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def rabbitmq_installed() -> bool:
    return os.path.exists(RABBITMQ_SERVER)


def _free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range: a port the kernel hands out (bind
    to 0) is free when probed, but any process's next outgoing connection may take it as its source
    port before the broker binds it (seen in CI: "dist_port_already_used ... not_erlang")."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            ephemeral = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for port in random.sample(range(10000, max(ephemeral, 10001)), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range for a test broker")


class RabbitMQ:
    def __init__(self):
        if not rabbitmq_installed():
            raise RuntimeError("RabbitMQ is not installed (apt-get install rabbitmq-server; scripts/bootstrap does)")
        self.workdir = tempfile.mkdtemp(prefix="kabigate-mq-")
        self.port, dist_port, self.epmd_port = _free_port(), _free_port(), _free_port()
        with open(os.path.join(self.workdir, "rabbitmq.conf"), "w") as config:
            config.write(f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n")
        with open(os.path.join(self.workdir, "enabled_plugins"), "w") as plugins:
            plugins.write("[].\n")
        open(os.path.join(self.workdir, "rabbitmq-env.conf"), "w").close()
        self.env = dict(
            os.environ, HOME=self.workdir,  # the Erlang cookie
            RABBITMQ_CONF_ENV_FILE=os.path.join(self.workdir, "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            RABBITMQ_CONFIG_FILE=os.path.join(self.workdir, "rabbitmq"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.workdir, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=os.path.join(self.workdir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.workdir, "log"),
            RABBITMQ_PID_FILE=os.path.join(self.workdir, "pid"),
            RABBITMQ_NODENAME=f"kabigate-test-{self.port}@localhost",
            RABBITMQ_DIST_PORT=str(dist_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_PORT=str(self.epmd_port), ERL_EPMD_ADDRESS="127.0.0.1")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, timeout: float = 90) -> None:
        with open(os.path.join(self.workdir, "server.out"), "ab") as log:
            self.process = subprocess.Popen([RABBITMQ_SERVER], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited: {self._tail()}")
            if self.ready():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not start in {timeout} s: {self._tail()}")

    def ready(self) -> bool:
        import amqp

        try:
            connection = amqp.Connection(f"127.0.0.1:{self.port}", userid="guest", password="guest",
                                         connect_timeout=2)
            connection.connect()
            connection.close()
            return True
        except (OSError, amqp.exceptions.AMQPError):
            return False

    def stop(self) -> None:
        """Stop the node (SIGTERM: a clean shutdown that keeps durable queues and persistent messages)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        # the node's own epmd (a daemon outside the process group), once the node has left it
        epmd = shutil.which("epmd") or next(iter(sorted(
            os.path.join(root, "epmd") for root, _dirs, files in os.walk("/usr/lib/erlang") if "epmd" in files)), None)
        for _ in range(20) if epmd else ():  # it refuses while the node is still registered
            subprocess.run([epmd, "-kill"], check=False, env=self.env, capture_output=True, timeout=10)
            if subprocess.run([epmd, "-names"], check=False, env=self.env, capture_output=True).returncode:
                break
            time.sleep(0.5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _tail(self) -> str:
        try:
            with open(os.path.join(self.workdir, "server.out"), errors="replace") as out:
                return " | ".join(out.read().strip().splitlines()[-5:])
        except OSError:
            return "(no output)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
