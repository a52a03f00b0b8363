"""``loom worker`` and ``loom queue status``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import attrs
import click

log = logging.getLogger(__name__)

QUEUE_OPTION = click.option(
    "--queue",
    "queue_url",
    envvar="LOOM_QUEUE_URL",
    default=None,
    metavar="URL",
    help="The shared queue: redis://host:6379/0 (query: lease_s, max_deliveries, prefix). "
    "Env: LOOM_QUEUE_URL.",
)


def _shared_queue(factory: Any, queue_url: str | None) -> tuple[Any, Any]:
    from loom_redis.queue import RedisQueue

    if queue_url:
        factory.settings = attrs.evolve(factory.settings, queue_url=queue_url)
    if not factory.settings.queue_url:
        raise click.UsageError(
            "needs a shared queue: --queue redis://HOST:6379/0 or LOOM_QUEUE_URL"
        )
    runtime = factory.runtime()
    queue = runtime.queue
    if not isinstance(queue, RedisQueue):
        raise click.UsageError(f"{factory.settings.queue_url!r} is not a Redis queue URL")
    return runtime, queue


@click.command()
@QUEUE_OPTION
@click.pass_obj
def worker(factory: Any, queue_url: str | None) -> int:
    """Run prompts from a shared queue (no HTTP); `loom serve --queue` accepts them."""
    import redis

    from loom_redis.worker import Worker

    if not logging.getLogger().handlers or logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    runtime, queue = _shared_queue(factory, queue_url)
    try:
        queue.client.ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot reach the queue at {factory.settings.queue_url}: {exc}"
        ) from exc
    _ = runtime.registry
    loop = Worker(runtime, queue)
    loop.install_signal_handlers()
    click.echo(f"loom worker {queue.consumer}: ready", err=True)
    loop.run()
    click.echo(f"loom worker {queue.consumer}: stopped", err=True)
    return 0


@click.group("queue")
def queue_group() -> None:
    """Inspect a shared prompt queue."""


@queue_group.command("status")
@QUEUE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def status(factory: Any, queue_url: str | None, as_json: bool) -> int:
    """Workers, leases, pending prompts and dead letters."""
    import redis

    from loom_redis.metrics import snapshot

    _, queue = _shared_queue(factory, queue_url)
    try:
        report = snapshot(queue)
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot read the queue at {factory.settings.queue_url}: {exc}"
        ) from exc
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0
    now_ms = time.time() * 1000
    click.echo(
        f"pending: {report['pending']}   running: {len(report['leases'])}   "
        f"dead letters: {report['dead_letter_count']}"
    )
    click.echo(f"workers ({len(report['workers'])}):")
    for name, state in sorted(report["workers"].items()):
        seen = (now_ms - state["seen_ms"]) / 1000
        running = f" {state['prompt_id']}" if state.get("prompt_id") else ""
        models = ", ".join(state.get("models") or []) or "-"
        click.echo(f"  {name}: {state['state']}{running} (seen {seen:.1f} s ago; models: {models})")
    for lease in report["leases"]:
        click.echo(
            f"lease {lease['prompt_id']}: {lease['consumer']}, idle {lease['idle_ms']} ms, "
            f"delivery {lease['deliveries']}"
        )
    for dead in report["dead_letters"]:
        click.echo(f"dead letter {dead['prompt_id']}: {dead['reason']}")
    return 0
