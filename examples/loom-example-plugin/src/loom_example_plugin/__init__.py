"""An example Loom plugin: one node that changes an image's brightness."""

__version__ = "0.1.0"
