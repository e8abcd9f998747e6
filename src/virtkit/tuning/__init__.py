"""The tuning advisor: host topology (topology.py), the pure per-VM plan (plan.py), the host
side (hostplan.py) and the service behind ``Client.tuning`` (service.py)."""
