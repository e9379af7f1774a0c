"""Detection: preprocessing, the int8 CNN, the anomaly detector and per-source decisions."""
