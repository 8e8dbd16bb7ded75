"""image-digest: model-serving images are pinned by digest (`@sha256:`) and come from allowed registries."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.registry import Policy, register
from policies.workload import ContainerRef, PodTemplate, Workload

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")


def container_name(ref: ContainerRef, tpl: PodTemplate) -> str:
    """The container's name as `kubectl logs -c` knows it (KServe runs its model as `kserve-container`)."""
    return ref.name


@dataclass(frozen=True)
class ImageRef:
    """A container image reference, normalised the way the container runtime reads it."""

    registry: str      # "docker.io", "ghcr.io", "localhost:5000"
    repository: str    # "library/nginx", "acme/vllm"
    tag: str | None
    digest: str | None  # "sha256:..." as written

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"


def parse_image(ref: str) -> ImageRef:
    """Split ``[registry/]repository[:tag][@digest]``; Docker Hub names get ``docker.io`` (and
    ``library/`` for official images). The first path component is a registry when it has a dot or
    a port, or is ``localhost`` — the rule Docker and containerd use."""
    name, _, digest = ref.strip().partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, tag = name[: len(name) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first.lower(), rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    return ImageRef(registry=registry, repository=repository, tag=tag or None, digest=digest or None)


def _without_tag(ref: str) -> str:
    name = ref.strip().partition("@")[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def registry_allowed(image: ImageRef, allowed: Sequence[str]) -> bool:
    """True when an entry names the image's registry (glob on the host, e.g. ``*.dkr.ecr.*.amazonaws.com``),
    optionally followed by a repository prefix that must end at a path boundary (``ghcr.io/acme``)."""
    for entry in allowed:
        host, _, prefix = entry.strip().rstrip("/").partition("/")
        host = host.lower()
        if host in DOCKER_HUB_ALIASES:
            host = DOCKER_HUB
        if not fnmatch.fnmatchcase(image.registry, host):
            continue
        if not prefix or image.repository == prefix or image.repository.startswith(prefix + "/"):
            return True
    return False


def _exempt(ref: str, image: ImageRef, patterns: Sequence[str]) -> bool:
    full = f"{image.name}{':' + image.tag if image.tag else ''}{'@' + image.digest if image.digest else ''}"
    return any(fnmatch.fnmatchcase(ref, p) or fnmatch.fnmatchcase(full, p) for p in patterns)


@register
class ImageDigest(Policy):
    id = "image-digest"
    title = "Model-serving images are pinned by digest from allowed registries"
    severity = "high"
    version = "1.1.0"
    description = ("Every image of a model-serving pod (label mlguard.io/model, a serving kind, or a match of the "
                   "PolicySet's spec.serving.selector such as a vLLM image; containers, init "
                   "containers, sidecars and ephemeral containers) is pinned by digest (`image@sha256:<64 "
                   "hex>`), so the server that passed evaluation is the one that runs, and comes from an "
                   "allowed registry (allowedRegistries: registry hosts, globs allowed, optionally with a "
                   "repository prefix such as ghcr.io/acme; empty allows any registry). appliesTo widens "
                   "the scope to GPU pods or all pods. exemptImages lists image globs for sidecars that "
                   "other webhooks inject (service mesh proxies). KServe model containers without an image"
                   " take it from their ServingRuntime (checked when the runtime is in the checked set), "
                   "LLMInferenceService containers from KServe's presets.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "allowedRegistries": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "appliesTo": {"enum": ["model-serving", "gpu", "all"]},
            "exemptImages": {"type": "array", "items": {"type": "string", "minLength": 1}},
        },
    }
    defaults = {"allowedRegistries": [], "appliesTo": "model-serving", "exemptImages": []}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        for i, tpl in enumerate(workload.templates):
            if not self._applies(workload, i, tpl, params["appliesTo"], ctx):
                continue
            for ref in tpl.containers():
                name = container_name(ref, tpl)
                raw = ref.container.get("image")
                where = ref.at("image")
                if raw is None and ref.fills("image"):
                    continue  # a KServe model spec, an LLMInferenceService container: the runtime/preset supplies it
                if not isinstance(raw, str) or not raw.strip():
                    yield Finding(where, f"container `{name}` sets no image; set image to a reference pinned "
                                  "by digest (registry/repository@sha256:<digest>)", resource=tpl.resource)
                    continue
                image = parse_image(raw)
                if _exempt(raw, image, params["exemptImages"]):
                    continue
                yield from self._pinned(name, raw, image, where, tpl)
                allowed = params["allowedRegistries"]
                if allowed and not registry_allowed(image, allowed):
                    yield Finding(where, f"container `{name}` pulls {raw} from {image.registry}, which is "
                                  f"not an allowed registry; push the image to one of {', '.join(allowed)} "
                                  "and reference it there by digest", resource=tpl.resource)

    @staticmethod
    def _applies(workload: Workload, index: int, tpl: PodTemplate, scope: str, ctx: EvalContext) -> bool:
        if scope == "all":
            return True
        if scope == "gpu" and workload.uses_gpu(index, ctx.gpu):
            return True
        return any(t is tpl for t in workload.serving_templates())

    @staticmethod
    def _pinned(container: str, raw: str, image: ImageRef, where: str, tpl: PodTemplate) -> Iterator[Finding]:
        bare = _without_tag(raw)
        if image.digest is None:
            how = f"pinned only by tag {image.tag}, which can move" if image.tag else \
                "with neither tag nor digest (it pulls :latest)"
            yield Finding(where, f"container `{container}` uses image {raw}, {how}; pin it by digest: "
                          f"{bare}@sha256:<digest> (`crane digest {raw}` prints it)", resource=tpl.resource)
        elif not SHA256.match(image.digest):
            algorithm = image.digest.split(":")[0]
            yield Finding(where, f"container `{container}` pins image {raw} by {algorithm!r}, "
                          "not a sha256 digest of 64 lowercase hex digits; pin it as "
                          f"{bare}@sha256:<digest>", resource=tpl.resource)
