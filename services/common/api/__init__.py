"""The Kubernetes API port: the one place that reads and writes API objects."""
