"""Metric providers: Prometheus analysis (built-in templates per router, custom PromQL)."""

from __future__ import annotations

from functions.providers.metrics.prometheus import PrometheusAnalysis

__all__ = ["PrometheusAnalysis"]
