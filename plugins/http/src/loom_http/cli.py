"""``loom serve``: run the ComfyUI-compatible server on the shared runtime."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import attrs
import click

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1",
    show_default=True,
    is_flag=False,
    flag_value="0.0.0.0",
    metavar="[ADDRESS]",
    help="Address to bind, or several separated by commas as in ComfyUI (e.g. 0.0.0.0,::); "
    "bare --listen: 0.0.0.0, every IPv4 interface. Anything other than loopback exposes the "
    "server to the network.",
)
@click.option(
    "--port",
    default=8188,
    show_default=True,
    type=int,
    help="Port to listen on (ComfyUI's default).",
)
@click.option(
    "--enable-cors-header",
    "cors_origin",
    is_flag=False,
    flag_value="*",
    default=None,
    metavar="[ORIGIN]",
    help="Send CORS headers for ORIGIN (default '*') instead of ComfyUI's origin check.",
)
@click.option(
    "--max-upload-size",
    "max_upload_size_mb",
    default=100.0,
    show_default=True,
    type=float,
    metavar="MB",
    help="Largest request body accepted.",
)
@click.option(
    "--auth-token",
    envvar="LOOM_AUTH_TOKEN",
    default=None,
    metavar="TOKEN",
    help="Require 'Authorization: Bearer TOKEN' (or ?token=TOKEN) on every route. Env: LOOM_AUTH_TOKEN.",
)
@click.option(
    "--front-end-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Serve this frontend directory instead of the installed comfyui-frontend-package.",
)
@click.option(
    "--preview-method",
    type=click.Choice(["none", "auto", "latent2rgb", "taesd"]),
    default="none",
    show_default=True,
    help="Latent previews for prompts that do not choose one.",
)
@click.option(
    "--queue",
    "queue_url",
    default=None,
    metavar="URL",
    help="Accept prompts into a shared queue that `loom worker`s run (redis://... with "
    "loom-redis); this server then runs none itself. Env: LOOM_QUEUE_URL.",
)
@click.pass_obj
def serve(factory: Any, queue_url: str | None, **flags: Any) -> int:
    """Run a ComfyUI-compatible HTTP + websocket server (API and web frontend)."""
    started = time.perf_counter()
    from aiohttp import web

    from loom_http.app import make_app
    from loom_http.state import ServerOptions

    if not logging.getLogger().handlers or logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    options = ServerOptions(**flags)
    if queue_url:
        factory.settings = attrs.evolve(factory.settings, queue_url=queue_url)
    runtime = factory.runtime()
    _clear_temp(runtime.settings.temp_dir)
    app = make_app(runtime, options)
    hosts = [part.strip() for part in options.listen.split(",") if part.strip()] or ["127.0.0.1"]
    exposed = [host for host in hosts if not _is_loopback(host)]
    if exposed:
        log.warning(
            "listening on %s: the server is reachable from the network%s",
            ", ".join(exposed),
            "" if options.auth_token else " and has no --auth-token",
        )

    def ready(_message: str) -> None:
        urls = ", ".join(f"http://{_url_host(host)}:{options.port}" for host in hosts)
        click.echo(f"loom serve: ready at {urls} ({time.perf_counter() - started:.2f} s)", err=True)

    # run_app calls ``print`` once every site listens: that is the readiness line.
    try:
        web.run_app(
            app,
            host=hosts if len(hosts) > 1 else hosts[0],
            port=options.port,
            print=ready,
            access_log=None,
            shutdown_timeout=5.0,
        )
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS and not isinstance(exc, socket.gaierror):
            raise
        raise click.ClickException(_bind_failure(", ".join(hosts), options.port, exc)) from exc
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {host} port {port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where}: the port is in use (another loom serve or ComfyUI?); "
            "stop it or choose another with --port"
        )
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges); choose another with --port"
    reason = os.strerror(exc.errno) if exc.errno in _BIND_ERRORS else exc.strerror or exc
    return f"{where}: {reason}; check --listen"


def _clear_temp(temp_dir: Path) -> None:
    """ComfyUI empties the temp directory at startup."""
    if temp_dir.is_dir() and os.path.basename(temp_dir) == "temp":
        shutil.rmtree(temp_dir, ignore_errors=True)
