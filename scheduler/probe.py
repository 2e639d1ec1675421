"""``dfarm doctor``'s requests: a short-lived FTP grant to an empty probe directory,
so that a worker or client host can check the data channel both ways with the real
server and credentials. Open to users and to holders of the worker secret."""

from __future__ import annotations

import logging

from scheduler import protocol as p
from scheduler.connection import Connection

log = logging.getLogger("scheduler.server")


class ProbeHandlers:
    """Mixed into :class:`scheduler.server.Scheduler`."""

    def on_probe_ftp(self, conn: Connection, msg: p.ProbeFtp) -> p.Message:
        grant, directory = self.spool.grant_probe(conn.local_host)
        ports = self.config.ftp_passive_ports
        log.info("FTP probe for %s %s from %s", conn.role.value, conn.name, conn.peer)
        return p.ProbeGranted(
            ftp=grant,
            directory=directory,
            passive_ports=f"{ports.start}-{ports.stop - 1}" if ports else "",
        )
