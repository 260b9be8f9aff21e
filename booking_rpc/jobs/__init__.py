"""Background jobs, each safe with several replicas."""
