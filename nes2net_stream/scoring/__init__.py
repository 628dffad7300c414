"""Scoring audio with a detector: windows, files and score aggregation."""
