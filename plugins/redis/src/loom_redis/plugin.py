"""loom-redis's hook implementations: the queue behind ``make_prompt_queue`` when the
settings name a ``redis://`` URL, and the ``loom worker`` / ``loom queue`` commands.
Nothing heavy (not even redis) is imported here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import loom

if TYPE_CHECKING:
    import click

    from loom.frontend import PromptQueue, Settings

SCHEMES = ("redis://", "rediss://", "unix://")


@loom.hookimpl
def make_prompt_queue(settings: Settings) -> PromptQueue | None:
    url = settings.queue_url
    if not url or not url.startswith(SCHEMES):
        return None
    from loom_redis.queue import RedisQueue

    return RedisQueue.from_url(url, output_dir=settings.output_dir)


@loom.hookimpl
def register_commands(cli: click.Group) -> None:
    from loom_redis.cli import queue_group, worker

    if "worker" not in cli.commands:
        cli.add_command(worker)
    if "queue" not in cli.commands:
        cli.add_command(queue_group)
