"""graylane's own observability: Prometheus metrics, structured logs, Kubernetes Events.

Nothing here imports a heavy library at module level: the runner imports `metrics` and `logs` on every
cold start, and `kube_events` imports the Kubernetes client only when a recorder talks to the apiserver.
"""
