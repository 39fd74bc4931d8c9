"""Talos: a message queue with storage-compute separation, built for cross-DC mirroring."""
