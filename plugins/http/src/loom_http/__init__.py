"""loom-http: a ComfyUI-compatible HTTP + websocket server for Loom (``loom serve``).

Importing this package is cheap: aiohttp and the server modules load only when
:func:`loom_http.app.make_app` or ``loom serve`` needs them.
"""

__version__ = "0.1.0"
