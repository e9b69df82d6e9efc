"""Prometheus metrics: the series the workers and `kcw serve` publish, and their HTTP endpoint."""
