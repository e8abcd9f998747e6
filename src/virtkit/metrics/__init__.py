"""Metrics: one collector per libvirt host (shared by the exporter and ``serve``'s /metrics),
and the Prometheus exposition of what it collects."""
