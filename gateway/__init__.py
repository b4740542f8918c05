"""A production-grade realtime chat gateway grown from the FastAPI WebSocket chat tutorial."""

__version__ = "0.1.0"
