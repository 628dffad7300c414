"""Audio components of nes2net-stream."""
