"""Evaluations that measure the agents against an independent reference (``selflearn evaluate``)."""
