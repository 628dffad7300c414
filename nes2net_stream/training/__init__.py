"""Training components of nes2net-stream."""
