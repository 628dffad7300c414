"""Data components of nes2net-stream."""
