"""Features: the 115 per-packet N-BaIoT statistics (vectorised engine, scalar reference, columns)."""
