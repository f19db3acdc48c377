"""Operating the agent: its own logs, Prometheus metrics, probes, rollups and sync status."""
