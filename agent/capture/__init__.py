"""Capture: frames from a pcap/pcapng file or a live interface, decoded into packet batches."""
