"""One blueprint per concern: admission (/validate, /mutate) and operations (/healthz, /readyz, /metrics)."""
