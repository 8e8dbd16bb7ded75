"""mlguard's admission webhook: the policy library served to the API server over TLS.

Layout: `app` (the Flask app factory gunicorn calls), `blueprints` (/validate and /mutate;
/healthz, /readyz, /metrics), `review` (AdmissionReview v1 parsed at the edge, the response built by
one pure function), `admission` (the webhook's rules around `policies.engine`), `policystore`
(hot reload of the PolicySet file), `cluster` (list+watch caches behind `ClusterFacts`), `metrics`,
`logging` (JSON lines), `tls` (certificate rotation), `gunicorn.conf.py`, `__main__` (serve).
"""
