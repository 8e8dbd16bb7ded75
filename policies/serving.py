"""Which workloads serve a model, which of their pod templates serve it, and the model's name.

A workload is model serving when it (or a pod template) carries the label ``mlguard.io/model``, when it
is a serving kind (KServe InferenceService and LLMInferenceService, a KubeRay RayService that deploys Serve
applications, a kind a PolicySet registers with ``serving: true``), or when it matches the PolicySet's
``spec.serving.selector``: kinds, labels, or images such as ``vllm/vllm-openai``.

The model's name comes from the label, then from well-known fields: the model server's arguments (vLLM
``--model`` / ``vllm serve MODEL`` / ``--served-model-name``, SGLang ``--model-path``, TGI
``--model-id``), KServe's ``storageUri`` / ``modelFormat``, an LLMInferenceService's ``spec.model``, a
Ray Serve LLM application's ``model_id``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from policies.selectors import label_selector_matches
from policies.templates import ContainerRef, PodTemplate, as_list, as_map, join

MODEL_LABEL = "mlguard.io/model"
# images of well-known model servers (globs; Docker Hub names may be written without docker.io/)
DEFAULT_SERVING_IMAGES = (
    "vllm/vllm-openai", "vllm/vllm-openai-rocm", "rocm/vllm", "lmsysorg/sglang",
    "ghcr.io/huggingface/text-generation-inference", "ghcr.io/huggingface/text-embeddings-inference",
    "nvcr.io/nvidia/tritonserver", "nvcr.io/nim/*", "ghcr.io/llm-d/llm-d*", "kserve/huggingfaceserver",
    "kserve/vllmserver", "ollama/ollama",
)
# argument -> how the model is named by it, per model server (the first found wins)
MODEL_ARGS = ("--model", "--model-path", "--model-id", "--model_name", "--served-model-name")
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@lru_cache(maxsize=4096)
def image_name(ref: str) -> str:
    """``vllm/vllm-openai:v0.9.0@sha256:..`` -> ``docker.io/vllm/vllm-openai`` (registry made explicit)."""
    name = ref.strip().partition("@")[0]
    head, sep, last = name.rpartition("/")
    name = f"{head}{sep}{last.split(':', 1)[0]}"
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return f"docker.io/{name}"
    return f"docker.io/{rest}" if first in DOCKER_HUB else name


def image_matches(ref: str, patterns: Sequence[str]) -> str | None:
    """The pattern an image reference matches (the registry normalised on both sides), or None."""
    return _matcher(tuple(patterns))(ref)


@lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], str | None]:
    """One compiled expression for a list of image patterns (this is on every object's path)."""
    if not patterns:
        return lambda ref: None
    regex = re.compile("|".join(f"(?P<p{i}>{fnmatch.translate(image_name(p))})" for i, p in enumerate(patterns)))

    @lru_cache(maxsize=4096)
    def match(ref: str) -> str | None:
        found = regex.match(image_name(ref))
        return patterns[int(found.lastgroup[1:])] if found and found.lastgroup else None
    return match


@dataclass(frozen=True)
class ServingConfig:
    """The PolicySet's ``spec.serving``: what else, besides the label and the serving kinds, is model serving."""

    images: tuple[str, ...] = DEFAULT_SERVING_IMAGES
    kinds: tuple[str, ...] = ()          # "Kind" or "group/Kind"
    labels: Mapping[str, Any] | None = None  # a LabelSelector on object or pod-template labels

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> ServingConfig:
        if spec is None:
            return cls()
        selector = as_map(spec.get("selector"))
        return cls(images=tuple(selector.get("images", DEFAULT_SERVING_IMAGES)),
                   kinds=tuple(selector.get("kinds") or ()), labels=selector.get("labels"))


@dataclass(frozen=True)
class Serving:
    """Why a workload is model serving, which templates serve, and the model's name where known."""

    reason: str
    templates: tuple[int, ...]
    model: str | None = None
    model_source: str = f"label {MODEL_LABEL}"   # how a message names where the name came from
    model_path: str = ""                          # the field that names it
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _args(container: Mapping[str, Any]) -> list[str]:
    words: list[str] = []
    for key in ("command", "args"):
        for item in as_list(container.get(key)):
            if isinstance(item, str):
                words.extend(item.split() if " " in item and not item.startswith("-") else [item])
    return words


def model_from_args(ref: ContainerRef) -> tuple[str, str, str] | None:
    """(name, source, path) of the model a server container is started with, from its arguments."""
    words = _args(ref.container)

    def name(value: str) -> bool:  # a local path (/mnt/models) names no model
        return not value.startswith(("-", "/", "$"))

    for flag in MODEL_ARGS:
        for i, word in enumerate(words):
            if word == flag and i + 1 < len(words) and name(words[i + 1]):
                return words[i + 1], f"argument {flag} of container `{ref.name}`", ref.at("args")
            if word.startswith(flag + "=") and name(word.split("=", 1)[1]):
                return word.split("=", 1)[1], f"argument {flag} of container `{ref.name}`", ref.at("args")
    for i, word in enumerate(words[:-1]):  # `vllm serve MODEL`
        if word == "serve" and i > 0 and words[i - 1].endswith("vllm") and name(words[i + 1]):
            return words[i + 1], f"`vllm serve` argument of container `{ref.name}`", ref.at("args")
    return None


def _repo_id(uri: str) -> str:
    """``hf://org/name`` names the Hugging Face repository ``org/name``; other URIs stay as written."""
    return uri[len("hf://"):] if uri.startswith("hf://") else uri


def _model(obj: Mapping[str, Any], templates: Sequence[PodTemplate], serving: Sequence[int],
           serve_config: Any) -> tuple[str, str, str] | None:
    """(name, source, path): the label, then the serving kind's own model fields, then the server's arguments,
    then KServe's model format."""
    labels = as_map(as_map(obj.get("metadata")).get("labels"))
    for i in serving:
        tpl = templates[i]
        if tpl.labels.get(MODEL_LABEL):
            return str(tpl.labels[MODEL_LABEL]), f"label {MODEL_LABEL}", tpl.meta_at(f"labels.{MODEL_LABEL}")
    if labels.get(MODEL_LABEL):
        return str(labels[MODEL_LABEL]), f"label {MODEL_LABEL}", join("metadata.labels", MODEL_LABEL)
    spec = as_map(obj.get("spec"))
    kind = obj.get("kind")
    model = as_map(as_map(spec.get("predictor")).get("model"))
    if kind == "InferenceService" and isinstance(model.get("storageUri"), str) and model["storageUri"]:
        return _repo_id(model["storageUri"]), "spec.predictor.model.storageUri", "spec.predictor.model.storageUri"
    if kind == "LLMInferenceService":
        llm = as_map(spec.get("model"))
        for key in ("name", "uri"):
            if isinstance(llm.get(key), str) and llm[key]:
                return _repo_id(llm[key]), f"spec.model.{key}", f"spec.model.{key}"
    if isinstance(serve_config, Mapping):
        for a, app in enumerate(as_list(serve_config.get("applications"))):
            for c, cfg in enumerate(as_list(as_map(as_map(app).get("args")).get("llm_configs"))):
                model_id = as_map(as_map(cfg).get("model_loading_config")).get("model_id")
                if isinstance(model_id, str) and model_id:
                    return (model_id, "spec.serveConfigV2 (model_loading_config.model_id)",
                            f"spec.serveConfigV2:applications[{a}].args.llm_configs[{c}]")
    for i in serving:
        for ref in templates[i].containers(sections=("containers",)):
            found = model_from_args(ref)
            if found:
                return found
    fmt = as_map(model.get("modelFormat")).get("name")
    if kind == "InferenceService" and isinstance(fmt, str) and fmt:
        return fmt, "spec.predictor.model.modelFormat.name", "spec.predictor.model.modelFormat.name"
    return None


def detect(obj: Mapping[str, Any], templates: Sequence[PodTemplate], *, kind_serving: Sequence[int] | None,
           config: ServingConfig, serve_config: Any = None) -> Serving | None:
    """Whether ``obj`` serves a model, and how (None when it does not)."""
    obj_labels = as_map(as_map(obj.get("metadata")).get("labels"))
    if not templates:  # a Rollout whose workloadRef is not in the checked set still serves by its label
        if obj_labels.get(MODEL_LABEL):
            return Serving(f"label {MODEL_LABEL}", (), str(obj_labels[MODEL_LABEL]), f"label {MODEL_LABEL}",
                           join("metadata.labels", MODEL_LABEL))
        return None
    kind = str(obj.get("kind"))
    api = obj.get("apiVersion")
    group = api.rpartition("/")[0] if isinstance(api, str) else ""
    all_idx = tuple(range(len(templates)))
    reason: str | None = None
    chosen: tuple[int, ...] = ()
    labelled = tuple(i for i, t in enumerate(templates) if MODEL_LABEL in t.labels)
    if labelled or MODEL_LABEL in obj_labels:
        reason, chosen = f"label {MODEL_LABEL}", labelled or all_idx
    elif kind_serving is not None:
        reason, chosen = f"kind {kind}", tuple(kind_serving)
    elif any(k in (kind, f"{group}/{kind}") for k in config.kinds):
        reason, chosen = f"kind {kind} (spec.serving.selector.kinds)", all_idx
    else:
        if config.labels:
            hits = tuple(i for i, t in enumerate(templates)
                         if label_selector_matches(config.labels, {**obj_labels, **t.labels}))
            if hits:
                reason, chosen = "labels matching spec.serving.selector.labels", hits
        if reason is None and config.images:
            hits_img: list[int] = []
            matched = ""
            for i, tpl in enumerate(templates):
                for ref in tpl.containers(sections=("containers",)):
                    image = ref.container.get("image")
                    pattern = image_matches(image, config.images) if isinstance(image, str) else None
                    if pattern:
                        hits_img.append(i)
                        matched = matched or f"image {image} (a model server: {pattern})"
                        break
            if hits_img:
                reason, chosen = matched, tuple(hits_img)
    if reason is None:
        return None
    if kind == "LeaderWorkerSet":  # an LWS serves from its leader; its workers take no traffic
        leaders = tuple(i for i in chosen if templates[i].name == "leader")
        chosen = leaders or chosen
    model = _model(obj, templates, chosen or all_idx, serve_config)
    if model is None:
        return Serving(reason, chosen)
    return Serving(reason, chosen, model[0], model[1], model[2])
