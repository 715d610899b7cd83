"""Django's PostgreSQL backend with a health check that costs no round trip while the
connection is quiet, and the web's timeouts on the connections requests open.

`CONN_HEALTH_CHECKS` makes Django send `SELECT 1` before each request's first query, so
that a connection the server dropped while the worker was idle (a restart, a failover,
an idle timeout) is replaced instead of failing the request with a 500. That is one
more round trip on every request. A server that drops a connection closes its socket
(after a FATAL message when it can), which makes the socket readable; an idle healthy
connection has nothing to read. So the socket is polled first, and `SELECT 1` is only
sent when something is waiting on it.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base

from voicecalls.db_timeouts import startup_options


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict:
        # A request's connection gets the lock and statement timeouts (voicecalls.db_timeouts).
        params = super().get_connection_params()
        timeouts = startup_options()
        if timeouts:
            params["options"] = f"{params.get('options', '')} {timeouts}".strip()
        return params

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and connection_is_quiet(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


def connection_is_quiet(connection: object) -> bool:
    """True when the psycopg `connection` is open and nothing waits on its socket: the
    server has neither closed it nor sent anything unasked (a notice, a notification)."""
    if connection.closed:
        return False
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)
