"""Every hook a Loom plugin can implement.

Every hook is called through pluggy's hook callers, so ``LOOM_TRACE_HOOKS=1`` logs every
call and ``tryfirst``/``trylast`` and ``wrapper=True`` implementations work for all of them.

Registration hooks take a ``register`` callback bound to the calling plugin, so whatever it
registers is attributed to it (duplicates name both plugins; ``loom plugins`` shows who
registered what). For that the registry calls the hook once per plugin
(:meth:`loom.plugins.PluginHost.call_each`): each call holds that plugin's implementation
alone, plus every wrapper, which so wraps each plugin's call and may register through the
same bound ``register``. Plugins are called ``tryfirst`` ones first, then in registration
order (core's built-ins, then entry points sorted by name), then ``trylast`` ones; a
registration that collides with an earlier one fails. ``on_execution_event`` and
``register_commands`` are called the same way, so one plugin's exception never keeps the
call from the others. Implementations may accept a subset of a spec's arguments; specs only
ever gain arguments.

All registration hooks are called once, by :func:`loom.registry.collect`, after every plugin
has loaded. They must stay cheap: declarations only, no weights, no device probing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from loom.events import ExecutionEvent
    from loom.executor.queue import PromptQueue
    from loom.registration import (
        RegisterFolderKind,
        RegisterModelFamily,
        RegisterNode,
        RegisterSampler,
        RegisterScheduler,
        RegisterWeightAdapter,
    )
    from loom.settings import Settings
    from loom.types import AdapterKeyMap, AdapterTarget

hookspec = pluggy.HookspecMarker("loom")
hookimpl = pluggy.HookimplMarker("loom")


# --- registration -----------------------------------------------------------------------


@hookspec
def register_nodes(register: RegisterNode) -> None:
    """Register the node classes this plugin provides.

    :param register: ``register(node_class, class_type=None, display_name=None,
        python_module=None)`` (:class:`loom.registration.RegisterNode`). Accepts
        declarative nodes (``@loom.node`` attrs classes) and classic ComfyUI classes
        (``INPUT_TYPES``/``RETURN_TYPES``/``FUNCTION``); ``class_type`` is required for
        classic classes, whose id lives in ``NODE_CLASS_MAPPINGS``.

    Called once by the registry after all plugins load. A class_type registered twice raises
    :class:`~loom.errors.DuplicateRegistrationError` naming both plugins; a malformed
    declaration raises :class:`~loom.errors.NodeDefinitionError` at registration.
    """


@hookspec
def register_model_folders(register: RegisterFolderKind) -> None:
    """Declare model folder kinds (``checkpoints``, ``loras``, ...).

    :param register: ``register(loom.FolderKind(...))``: a key, the default
        sub-directories under ``models/``, accepted file extensions and legacy aliases.

    Called once by the registry. Core declares ComfyUI's standard folders; a plugin adds the
    folders only it needs. Declaring an existing key again merges its directories.
    """


@hookspec
def register_model_families(register: RegisterModelFamily) -> None:
    """Register model families: objects implementing :class:`loom.types.ModelFamily`.

    :param register: ``register(family)``; ``family.name`` must be unique.

    The generic loader nodes (``CheckpointLoaderSimple``, ``UNETLoader``, ``CLIPLoader``,
    ``VAELoader``, ...) read a safetensors header once and ask every family, in registration
    order, to score it for a :class:`loom.types.ModelPart`; the family with the highest
    score gets ``family.load(header, part, request)`` with a :class:`loom.types.LoadRequest`
    (extra files, weight dtype, text encoder type, model folders, memory manager). Must not
    load weights at registration.
    """


@hookspec
def register_samplers(register: RegisterSampler) -> None:
    """Register sampling algorithms by ComfyUI name (``"euler"``, ``"dpmpp_2m"``).

    :param register: ``register(name, sampler)``; ``sampler`` follows the sampler contract
        documented in :class:`loom.types.Sampler`.

    Called once by the registry. The names populate the ``sampler_name`` combos.
    """


@hookspec
def register_schedulers(register: RegisterScheduler) -> None:
    """Register sigma schedules by ComfyUI name (``"normal"``, ``"karras"``).

    :param register: ``register(name, scheduler)``; ``scheduler(model_sampling, steps)``
        returns the sigma tensor (``steps + 1`` values, last one 0).

    Called once by the registry. The names populate the ``scheduler`` combos.
    """


@hookspec
def register_weight_adapters(register: RegisterWeightAdapter) -> None:
    """Register weight-adapter formats (LoRA, LoHa, LoKr, ...).

    :param register: ``register(adapter)``; ``adapter`` implements
        :class:`loom.types.WeightAdapter`: it declares the key suffixes it reads and turns
        one layer's tensors into weight patches that :mod:`loom.memory` applies.

    Called once by the registry; adapters are offered each layer in registration order.
    ``adapter.name`` must be unique. Must not read any file at registration.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``loom`` command line (``loom serve`` comes from loom-http).

    :param cli: the root click group; call ``cli.command()`` / ``cli.add_command()`` on it.

    Called once when the CLI starts, after plugins load, once per implementing plugin: one
    plugin's failure is reported and the others' commands still appear. Import heavy modules
    inside the command function, not at plugin import, so ``loom --help`` stays fast.
    """


# --- models -------------------------------------------------------------------------------


@hookspec(firstresult=True)
def adapter_key_map(model: Any, kind: AdapterTarget) -> AdapterKeyMap | None:
    """Name a model's weights the way weight-adapter files (LoRA, LyCORIS) name them.

    :param model: a MODEL or CLIP socket value, already cloned by the caller: the patches
        go on the handle the answer names, so they stay with this clone.
    :param kind: ``"model"`` (the diffusion model) or ``"clip"`` (the text encoders).
    :return: a :class:`loom.types.AdapterKeyMap`: the :class:`loom.memory.ModelHandle` to
        patch and a map from every layer name an adapter format uses (kohya's flattened
        ``lora_unet_down_blocks_0_attentions_0_proj_in`` / ``lora_te_text_model_...``,
        diffusers / PEFT ``unet.down_blocks.0...``, ComfyUI's ``diffusion_model.*``) to that
        handle's weight key; or None if ``model`` is not this family's.

    Stops at the first non-None result. Called by weight-adapter loaders (LoraLoader) each
    time they patch a model; cheap (no weights read), so cache the map per configuration.
    """


# --- execution --------------------------------------------------------------------------


@hookspec
def on_execution_event(event: ExecutionEvent) -> None:
    """Observe one execution event (ComfyUI's websocket message types and payloads).

    :param event: ``event.type`` is ``execution_start``, ``execution_cached``,
        ``executing``, ``progress``, ``progress_state``, ``executed``, ``execution_success``,
        ``execution_error``, ``execution_interrupted`` or ``status``; ``event.data`` is the
        payload ComfyUI sends; ``event.client_id`` is the client that queued the prompt (or
        None: broadcast); binary previews carry ``event.preview``.

    Called by the executor's worker thread, synchronously, for every event of every prompt,
    once per implementing plugin (see the module docstring): an implementation that raises
    is logged and the others still get the event. An implementation must return quickly:
    hand the event to your own thread or loop (the HTTP plugin does).
    """


@hookspec(firstresult=True)
def make_prompt_queue(settings: Settings) -> PromptQueue | None:
    """Supply the prompt queue every frontend shares (for example a distributed backend).

    :param settings: the runtime settings.
    :return: an object with :class:`loom.executor.queue.PromptQueue`'s interface, or None
        to leave the choice to another plugin.

    Stops at the first non-None result; without one, core's in-process queue is used.
    Called once, when the runtime first needs its queue.
    """


def all_hook_names() -> list[str]:
    """Names of every hookspec in this module (used by the docs and meta-tests)."""
    return sorted(
        name for name, value in globals().items() if callable(value) and hasattr(value, "loom_spec")
    )


__all__: list[Any] = ["all_hook_names", "hookimpl", "hookspec"]
