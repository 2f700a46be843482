"""A RabbitMQ node of a benchmark's own, which it may stop, cut off and reconfigure freely.

The machine's RabbitMQ serves other people's runs, so a fault benchmark starts this instead: a
node named ``interlock-<port>@localhost`` with its own data, log and config directory, listening
on 127.0.0.1 on a free port, run as the ``rabbitmq`` user when we are root (it shares that user's
Erlang cookie, so ``rabbitmqctl -n <node>`` reaches it). Never clustered with the machine's node.

:class:`PrivateRabbitMQCluster` starts three such nodes on this host and joins the second and
third to the first (``stop_app``, ``join_cluster``, ``start_app``): the shared cookie is what lets
them talk. A node can be shut down (its Erlang VM gone, like a lost host) and started again on its
own files, when it rejoins the cluster by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pika

from testkit.processes import free_port
from testkit.service import PrivateService
from testkit.waiting import wait_until

__all__ = ["PrivateRabbitMQ", "PrivateRabbitMQCluster"]


class PrivateRabbitMQ(PrivateService):
    """One private node: ``with PrivateRabbitMQ() as rabbit: url = rabbit.url``."""

    def __init__(self, *, port: int = 0, directory: Path | None = None) -> None:
        """``port`` and ``directory``: fixed ones (``scripts/rabbitmq-cluster``); free and fresh by default."""
        self.port = port
        # RabbitMQ's own convention: the distribution port is the AMQP port + 20000.
        self.dist_port = port + 20000 if port else 0
        self.directory: Path | None = None
        self._fixed_directory = directory

    @property
    def node(self) -> str:
        return f"interlock-{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> PrivateRabbitMQ:
        """Start the node (again, on its own files, after :meth:`shutdown`); returns when it accepts
        AMQP connections."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the node's Erlang VM and return at once (:meth:`wait_ready` waits for it)."""
        if self.directory is None:
            if not self.port:
                self.port, self.dist_port = free_port(), free_port()
            if self._fixed_directory is not None:
                self._fixed_directory.mkdir(parents=True, exist_ok=True)
            self.directory = self._fixed_directory or Path(tempfile.mkdtemp(prefix="interlock-rabbitmq-"))
            (self.directory / "enabled_plugins").write_text("[].\n")
            # guest may connect from loopback only (the default), which is where we are. The
            # system's config file pins 5672: this node reads its own instead.
            (self.directory / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
            if os.geteuid() == 0:
                shutil.chown(self.directory, user="rabbitmq", group="rabbitmq")
                for path in self.directory.iterdir():
                    shutil.chown(path, user="rabbitmq", group="rabbitmq")
        self._run("rabbitmq-server", "-detached")

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(self.accepts_connections, timeout=timeout, interval=0.5, what=f"RabbitMQ node {self.node}")

    def shutdown(self) -> None:
        """Stop the node's Erlang VM, keeping its files: the host is lost until :meth:`start`."""
        self.ctl("shutdown")

    def accepts_connections(self) -> bool:
        try:
            pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=1")).close()
        except pika.exceptions.AMQPError:
            return False
        return True

    def stop_app(self) -> None:
        """``rabbitmqctl stop_app``: the broker goes away (connections cut), the Erlang node stays."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        wait_until(self.accepts_connections, timeout=60, interval=0.2, what=f"RabbitMQ node {self.node} back")

    def close_all_connections(self) -> None:
        self.ctl("close_all_connections", "fault injected")

    def set_consumer_timeout(self, milliseconds: int) -> None:
        """Deliveries unacknowledged longer than this close their channel (RabbitMQ checks about once a minute)."""
        self.ctl("eval", f"application:set_env(rabbit, consumer_timeout, {int(milliseconds)}).")

    def ctl(self, *args: str) -> str:
        return self._run("rabbitmqctl", "-q", "-n", self.node, *args)

    def close(self) -> None:
        """Stop the node and delete its files."""
        if self.directory is None:
            return
        try:
            self._run("rabbitmqctl", "-q", "-n", self.node, "shutdown", check=False)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _run(self, program: str, *args: str, check: bool = True) -> str:
        assert self.directory is not None, "start() first"
        base = self.directory
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": "/var/lib/rabbitmq" if os.geteuid() == 0 else os.environ.get("HOME", str(base)),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        }
        command = [program, *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "rabbitmq", "--", "env", *(f"{k}={v}" for k, v in env.items()), *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout


class PrivateRabbitMQCluster(PrivateService):
    """Three private nodes clustered on this host: ``with PrivateRabbitMQCluster() as cluster: cluster.url``.

    ``url`` names every node (``;``-separated, as ``INTERLOCK_BROKER_URL`` takes them), so a client
    reconnects to a surviving node. Never includes the machine's own node.
    """

    def __init__(self, size: int = 3, *, base_port: int = 0, directory: Path | None = None) -> None:
        """``base_port``: nodes on ``base_port``, ``base_port + 1``, ...; ``directory``: their files
        in ``directory/<port>`` (both for ``scripts/rabbitmq-cluster``). Free and fresh by default."""
        self.nodes = [
            PrivateRabbitMQ(
                port=base_port + i if base_port else 0,
                directory=directory / str(base_port + i) if directory is not None and base_port else None,
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ";".join(node.url for node in self.nodes)

    def start(self) -> PrivateRabbitMQCluster:
        """Start every node at once, then join the others to the first; returns a formed cluster."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
            node.wait_ready()
        wait_until(
            lambda: all(n.node in first.ctl("cluster_status") for n in self.nodes),
            timeout=60,
            interval=0.5,
            what="the cluster's members",
        )
        return self

    def running_nodes(self) -> list[str]:
        """The members that are up, as any running node sees them."""
        for node in self.nodes:
            if node.accepts_connections():
                status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
                return [n.node for n in self.nodes if n.node in status.get("running_nodes", [])]
        return []

    def close(self) -> None:
        """Shut every node down at once (one by one, each would wait on its peers) and delete their files."""
        closing = [threading.Thread(target=node.close) for node in self.nodes]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()
