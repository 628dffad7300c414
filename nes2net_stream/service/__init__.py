"""The streaming service: ingest, scoring engine, alert policy, Redis publishing."""
