"""Graylane on one machine: the local stack (HAProxy, Prometheus, Alertmanager, hey), providers driving it,
the real `graylane demo` scenario, the terminal live view and the HTML release report."""
