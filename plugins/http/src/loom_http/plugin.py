"""loom-http's hook implementations: the ``loom serve`` command.

Execution events reach the websocket hub through a per-runtime forwarder that
:func:`loom_http.app.make_app` registers on that runtime's plugin manager (see
:class:`loom_http.ws.EventForwarder`), so two servers in one process never see each
other's events. Nothing heavy is imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import loom

if TYPE_CHECKING:
    import click


@loom.hookimpl
def register_commands(cli: click.Group) -> None:
    from loom_http.cli import serve

    if "serve" not in cli.commands:
        cli.add_command(serve)
