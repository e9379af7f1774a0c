"""IoTGuard agent: on-board Mirai detection (capture -> parse -> filter -> features -> model -> decide -> act/report)."""

__version__ = "0.1.0"
