"""Operating the webhook under a real API server: PolicySet hot reload, and what failurePolicy does
when the webhook is down (the prod overlay fails closed, the dev overlay fails open)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conftest import Env, reload_policyset
from e2e_cluster import render, webhook_configurations_for_120
from e2e_objects import container, deployment, pod_template
from test_admission import DENIED


def sneaky(name: str, ns: str) -> dict:
    tpl = pod_template(name, container(name, gpus=None, env={"NVIDIA_VISIBLE_DEVICES": "all"}))
    return deployment(name, ns, template=tpl)


def test_policyset_hot_reload_changes_the_verdict(env: Env, ns: str) -> None:
    denied = env.alice.apply(sneaky("tool", ns), "--dry-run=server")
    assert not denied.ok and DENIED in denied.stderr and "gpu-isolation" in denied.stderr

    def to_warn(spec: dict) -> None:
        spec["policies"]["gpu-isolation"]["action"] = "warn"
    with reload_policyset(env, to_warn):
        warned = env.alice.apply(sneaky("tool", ns), "--dry-run=server")
        assert warned.ok, warned.output
        assert any(w.startswith("gpu-isolation:") for w in warned.warnings), warned.stderr

    again = env.alice.apply(sneaky("tool", ns), "--dry-run=server")
    assert not again.ok and "gpu-isolation" in again.stderr


@contextmanager
def webhook_down(env: Env) -> Iterator[None]:
    env.webhook.stop()
    env.alice.transcript.note("webhook stopped (gunicorn terminated)")
    try:
        yield
    finally:
        env.webhook.start(step="restart the webhook after the failurePolicy case")
        env.alice.transcript.note("webhook restarted")


def register(env: Env, overlay: str) -> None:
    configs = webhook_configurations_for_120(render(overlay), url=env.webhook.url, ca_bundle=env.cp.pki.ca_b64)
    result = env.admin.apply(configs)
    assert result.ok, result.output


def test_failure_policy_fail_closed_in_prod_open_in_dev(env: Env, ns: str) -> None:
    """With the webhook down: prod's configurations (failurePolicy Fail) refuse a GPU Deployment,
    dev's (Ignore) let even a violating one in. The project's own overlays, converted for 1.20."""
    try:
        with webhook_down(env):
            closed = env.alice.apply(deployment("served", ns))
            assert not closed.ok
            assert 'failed calling webhook "validate.mlguard.io"' in closed.stderr, closed.stderr

            register(env, "overlays/dev")
            opened = env.alice.apply(sneaky("tool", ns))
            assert opened.ok, opened.output
            assert "mlguard" not in opened.output
    finally:
        register(env, "overlays/prod")
    denied = env.alice.apply(sneaky("other", ns))
    assert not denied.ok and DENIED in denied.stderr
