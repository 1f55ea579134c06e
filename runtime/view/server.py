"""Serving the viewer with uvicorn: on a socket we bind ourselves (so a busy port is one clear error
and port 0 picks a free one), in the foreground for `cips view` or in a thread for tests and benchmarks."""
from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

from cips_edge.core.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port), or UserError."""
    if not 0 <= port <= 65535:
        raise UserError(f"port must be from 0 to 65535, got {port}", params="port")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def served_hosts(sock: socket.socket, host: str) -> tuple[frozenset[str], bool]:
    """(host names, any_address) for create_app: what a browser may call the server listening on `sock`
    (bound from --host `host`). Always localhost and the loopback addresses, the bound address and the
    --host name; bound to every address (0.0.0.0, ::), also this machine's names and any IP address."""
    from .app import LOOPBACK_HOSTS

    address = sock.getsockname()[0]
    names = set(LOOPBACK_HOSTS) | {address.lower(), host.strip("[]").lower()}
    everywhere = ipaddress.ip_address(address).is_unspecified
    if everywhere:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(n.rstrip(".") for n in names if n), everywhere


def _server(app):
    import uvicorn

    # no access log: a page view asks for dozens of tiles a second
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))


def serve(app, sock: socket.socket) -> None:
    """Serve until Ctrl-C: uvicorn shuts down cleanly, then raises the signal again, which ends here."""
    try:
        _server(app).run(sockets=[sock])
    except KeyboardInterrupt:
        pass


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve in a background thread while the block runs; yields the URL."""
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the viewer's server did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
