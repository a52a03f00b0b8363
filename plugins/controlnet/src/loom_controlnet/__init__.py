"""Loom plugin: ControlNets, their loader nodes and the nodes that apply them to conditioning."""
