"""The exporter's HTTP side: ``GET /metrics`` in Prometheus's text format (gzip when the
scraper asks, as Prometheus does), a small index page at ``/``."""

from __future__ import annotations

import gzip
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from virtkit.metrics.collector import HostCollector
from virtkit.metrics.prometheus import VirtkitCollector
from virtkit.services.store import Store
from virtkit.services.tasks import count_by_state

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INDEX = b"""<!doctype html><title>virtkit exporter</title>
<h1>virtkit exporter</h1><p><a href="metrics">metrics</a></p>
"""


def metrics_handler(collector: VirtkitCollector) -> type[BaseHTTPRequestHandler]:
    """A request handler class serving ``collector``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "virtkit-exporter"
        # headers and body go out in two writes: without this, Nagle's algorithm holds the
        # body back until the scraper's delayed ACK (milliseconds per scrape)
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(200, "text/html; charset=utf-8", _INDEX)
                return
            if path != "/metrics":
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
                return
            try:
                body = collector.render()
            except Exception:  # a scrape answers even so: it says what broke in the log
                log.exception("scrape failed")
                self._send(500, "text/plain; charset=utf-8", b"scrape failed: see the log\n")
                return
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                self._send(200, CONTENT_TYPE, gzip.compress(body, compresslevel=1), "gzip")
            else:
                self._send(200, CONTENT_TYPE, body)

        def _send(self, code: int, ctype: str, body: bytes, encoding: str | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def exporter_server(
    hosts: list[HostCollector], store: Store | None, address: tuple[str, int]
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for these hosts' metrics and the store's tasks."""
    collector = VirtkitCollector(
        hosts, tasks=(lambda: count_by_state(store)) if store is not None else None
    )
    cls = _IPv6Server if ":" in address[0] else ThreadingHTTPServer
    server = cls(address, metrics_handler(collector))
    server.daemon_threads = True
    return server


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
