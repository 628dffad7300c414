"""Models components of nes2net-stream."""
