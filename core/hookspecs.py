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
    from loom.nodes.spec import NodeDef, NodeEnvironment
    from loom.registration import (
        RegisterFolderKind,
        RegisterModelFamily,
        RegisterNode,
        RegisterSampler,
        RegisterScheduler,
        RegisterWeightAdapter,
    )
    from loom.runtime import Runtime
    from loom.settings import Settings
    from loom.types import AdapterKeyMap, AdapterTarget, WebServer

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

    :param register: ``register(name, sampler, info=SamplerInfo())``; ``sampler`` implements
        :class:`loom.types.Sampler` (it is given a :class:`loom.types.Denoiser` and a
        :class:`loom.types.NoiseSource`); ``info``, a :class:`loom.types.SamplerInfo`,
        declares how a sampling run must treat it (an extra scheduled step whose
        second-to-last sigma is dropped, fresh inpainting noise, the unconditional
        prediction for CFG++). A name another plugin registered raises
        DuplicateRegistrationError.

    Called once by the registry. The names populate the ``sampler_name`` combos; nodes find
    a sampler with :func:`loom.samplers.find_sampler`. Must not import torch or build models
    at registration.
    """


@hookspec
def register_schedulers(register: RegisterScheduler) -> None:
    """Register sigma schedules by ComfyUI name (``"normal"``, ``"karras"``).

    :param register: ``register(name, scheduler)``; ``scheduler`` implements
        :class:`loom.types.Scheduler`: ``scheduler(model_sampling, steps)`` returns the sigma
        tensor (``steps + 1`` values, last one 0).

    Called once by the registry. The names populate the ``scheduler`` combos; nodes find a
    scheduler with :func:`loom.samplers.find_scheduler`.
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


@hookspec(firstresult=True)
def compile_node(
    node_class: Any, class_type: str | None, display_name: str | None, python_module: str | None
) -> NodeDef | None:
    """Compile a node class written in a style core does not know into a :class:`NodeDef`.

    :param node_class: what was passed to ``register``: not an ``@loom.node`` class. Asked
        before core compiles a classic ComfyUI class, since a style of its own may also look
        classic (ComfyUI's V3 nodes carry ``INPUT_TYPES`` / ``RETURN_TYPES`` views); return
        None for classes of styles this plugin does not know.
    :param class_type: the id it was registered under, or None to take the class's own.
    :param display_name: a display name given at registration, or None.
    :param python_module: the ``python_module`` ``/object_info`` reports, or None.
    :return: the definition, or None if this plugin does not know the style.

    Stops at the first non-None result. Called by the registry during ``register_nodes``;
    raise :class:`~loom.errors.NodeDefinitionError` for a malformed class of your style.
    """


@hookspec(firstresult=True)
def custom_node_entrypoint(module: Any, name: str) -> list[type] | None:
    """The node classes of a ``custom_nodes/`` package that has no ``NODE_CLASS_MAPPINGS``.

    :param module: the imported package module.
    :param name: the package name (``custom_nodes.<name>`` is its module name).
    :return: node classes to register for the package (each compiled through
        :func:`compile_node` unless core knows its style), or None if the module has no
        entry point this plugin understands.

    Stops at the first non-None result. Called by the custom-node loader while importing
    the package (its import time includes this call); raising fails the package.
    """


@hookspec
def prepare_runtime(runtime: Runtime) -> None:
    """See the runtime before custom-node packages are imported and registration hooks run.

    :param runtime: the runtime being set up; its settings are final, its registry is not
        built yet (reading ``runtime.registry`` here recurses).

    Called once per runtime by :attr:`loom.runtime.Runtime.registry`, after plugins load.
    """


@hookspec
def plugin_notes(plugin_name: str) -> list[str] | None:
    """Notes ``loom plugins`` prints under a loaded plugin (names it asked for and lacks, ...).

    :param plugin_name: a loaded plugin's name (custom-node packages: ``custom_nodes.<name>``).
    :return: lines to show, or None.

    Results of every implementation are shown. Called by ``loom plugins``.
    """


@hookspec
def web_server_started(server: WebServer) -> None:
    """A web frontend built its application: add routes, keep ``server`` to send messages.

    :param server: a :class:`loom.types.WebServer` (its ``app`` is an aiohttp application
        that is not started yet, so routes may still be added).

    Called by the web frontend plugin once per application, before it builds the runtime's
    registry (custom-node packages may import after this call, while the app can still
    take routes) and before it adds its static routes.
    """


@hookspec
def web_server_stopped(server: WebServer) -> None:
    """The application ``server`` wraps has shut down; stop sending through it.

    :param server: the object :func:`web_server_started` was given.

    Called by the web frontend plugin at application cleanup.
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


@hookspec
def node_problems(node_id: str, prompt: dict[str, Any], env: NodeEnvironment) -> list[str] | None:
    """What running node ``node_id`` would fail on that can be known without running it.

    For resources outside the prompt a plugin's code needs: a text encoder's tokenizer files
    that are nowhere to be found, say. Called by validation (``loom validate``, ``/prompt``)
    for each node whose own inputs are valid; every plugin is asked and each message becomes
    a ``missing_resource`` error of that node, so nothing runs. Never load models here.

    :param node_id: the node asked about.
    :param prompt: the whole API prompt (its links say who uses the node's outputs).
    :param env: the runtime's registry, model folders and settings.
    :return: one message per problem, or None when the node is not yours.
    """


def all_hook_names() -> list[str]:
    """Names of every hookspec in this module (used by the docs and meta-tests)."""
    return sorted(
        name for name, value in globals().items() if callable(value) and hasattr(value, "loom_spec")
    )


__all__: list[Any] = ["all_hook_names", "hookimpl", "hookspec"]
