"""The ``loom`` command line (plugins add commands through ``register_commands``)."""
