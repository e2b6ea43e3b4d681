"""The model catalogue and routing policy: typed, validated at load, errors name the field.

``config/models.yaml`` lists named models; ``config/routing.yaml`` maps tasks to tiers and tiers to
models, with the escalation threshold. Per-server overrides (stored by the bot) are a
:class:`RoutingOverrides` applied on top.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from inference.artifacts import validate_source
from inference.errors import ConfigError
from inference.types import TASKS, TaskId, Tier

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    connect_s: float = Field(5.0, gt=0)
    first_token_s: float = Field(60.0, gt=0)
    total_s: float = Field(300.0, gt=0)


class RetryPolicy(_Strict):
    max_attempts: int = Field(3, ge=1, le=10)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_cap_s: float = Field(8.0, ge=0)
    #: A Retry-After longer than this is not waited for: the attempt fails instead.
    retry_after_cap_s: float = Field(30.0, ge=0)


class Cooldown(_Strict):
    window_s: float = Field(60.0, gt=0)
    min_requests: int = Field(3, ge=1)
    failure_ratio: float = Field(0.5, gt=0, le=1)
    duration_s: float = Field(30.0, gt=0)


class Limits(_Strict):
    max_concurrency: int = Field(2, ge=1)
    max_queue: int = Field(8, ge=0)


class _ModelBase(_Strict):
    tier: Tier
    description: str = ""
    context_window: int = Field(2048, ge=128)
    max_new_tokens: int = Field(512, ge=1)
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    cooldown: Cooldown = Cooldown()
    limits: Limits = Limits()
    #: Name of another catalogue model used when this one cannot be reached at start-up.
    fallback: str | None = None
    #: A base (not instruction-tuned) model: the completion task prefers one, as a continuation is what it does best.
    base: bool = False
    #: What the model reads besides text: ``image`` for a vision model (OpenAI-compatible ``image_url`` parts, or
    #: an ONNX image-to-text model). The multimodal route only sends images to a model that lists ``image``.
    modalities: tuple[Literal["text", "image", "audio", "video"], ...] = ("text",)

    def reads(self, modality: str) -> bool:
        return modality in self.modalities


class OnnxModel(_ModelBase):
    kind: Literal["onnx"] = "onnx"
    source: str
    #: genai = onnxruntime-genai (C++ generation loop); optimum = optimum's ORTModelForCausalLM.
    runtime: Literal["genai", "optimum"] = "genai"
    precision: Literal["fp32", "fp16", "int8", "int4", "int4-exact"] = "fp32"
    #: ONNX Runtime execution providers in order of preference.
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    revision: str | None = None

    _check_source = field_validator("source")(classmethod(lambda cls, v: validate_source(v)))


class TransformersModel(_ModelBase):
    kind: Literal["transformers"] = "transformers"
    source: str
    #: A larger hub model to run instead of ``source`` once ``models prepare`` has downloaded it (where a model
    #: hub is reachable); until then, or offline, ``source`` stands in and the start-up log says so.
    prefer: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    revision: str | None = None
    trust_remote_code: bool = False

    _check_source = field_validator("source")(classmethod(lambda cls, v: validate_source(v)))

    @field_validator("prefer")
    @classmethod
    def _hub_id(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
            raise ValueError("must be a model hub id such as HuggingFaceTB/SmolLM2-1.7B-Instruct")
        return v


class OpenAIModel(_ModelBase):
    kind: Literal["openai"] = "openai"
    base_url: str
    model: str
    #: Name of the operator's environment variable that holds the API key (never the key itself). Operator
    #: catalogue only: endpoints a server admin adds never read the operator's environment.
    api_key_env: str | None = None
    #: The key itself, for endpoints a server admin added (kept encrypted in the database, decrypted per request
    #: scope). Never stored in a spec's JSON: dumps show only a short fingerprint.
    api_key: SecretStr | None = None
    #: Extra fields merged into each request body (e.g. vLLM's guided decoding options).
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_serializer("api_key")
    def _fingerprint(self, key: SecretStr | None) -> str | None:
        # A different key is a different spec (a new backend), yet the key never appears in a dump.
        return None if key is None else "sha256:" + hashlib.sha256(key.get_secret_value().encode()).hexdigest()[:12]

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("must be the NAME of an environment variable, not a key")
        return v


class ImageToTextModel(_ModelBase):
    """A local image-to-text model (an encoder-decoder captioner such as ViT + GPT-2) exported to ONNX by
    ``models prepare`` and run by ONNX Runtime through optimum (inference.backends.vision). It answers no
    request itself: where no chat model sees images, it describes a request's images for the text model."""

    kind: Literal["onnx-vision"] = "onnx-vision"
    #: A local directory (works offline) or a hub id (downloaded by ``models prepare`` where a hub is reachable).
    source: str
    tier: Tier = Tier.SMALL
    #: A caption is a sentence: a short limit keeps a runaway decoder cheap.
    max_new_tokens: int = Field(40, ge=1)
    precision: Literal["fp32"] = "fp32"
    #: ONNX Runtime execution providers in order of preference.
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    revision: str | None = None
    modalities: tuple[Literal["text", "image", "audio", "video"], ...] = ("image",)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("packaged:"):
            raise ValueError("must be a local directory or a hub id of an image-to-text model (no packaged one)")
        return validate_source(v)

    @field_validator("modalities")
    @classmethod
    def _image_only(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if tuple(v) != ("image",):
            raise ValueError("an image-to-text model reads images only: leave modalities out or write [image]")
        return v


ModelSpec = Annotated[OnnxModel | TransformersModel | OpenAIModel | ImageToTextModel, Field(discriminator="kind")]


def sees_images(spec: ModelSpec) -> bool:
    """Whether a chat model answers with the images in front of it (an image-to-text model only describes them)."""
    return spec.reads("image") and not isinstance(spec, ImageToTextModel)


class Catalogue(_Strict):
    models: dict[str, ModelSpec]
    #: Models added by a server's admins rather than the operator: their endpoints go through the
    #: server-side-request-forgery guard on every request.
    untrusted: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> Catalogue:
        for name, spec in self.models.items():
            if spec.fallback is not None and spec.fallback not in self.models:
                raise ValueError(f"models.{name}.fallback: unknown model {spec.fallback!r}")
        return self

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(self.models))}") from None

    def with_models(self, extra: dict[str, ModelSpec], *, untrusted: bool = True) -> Catalogue:
        if not extra:
            return self
        marked = self.untrusted | frozenset(extra) if untrusted else self.untrusted
        return Catalogue(models={**self.models, **extra}, untrusted=marked)


class Escalation(_Strict):
    #: Difficulty score at or above which a small-tier request goes to the large tier.
    threshold: float = Field(0.5, ge=0, le=1)
    #: Prompt + history tokens beyond which a request counts as long context.
    long_context_tokens: int = Field(1500, ge=1)
    #: Below this classifier confidence, the request goes to the large tier (safer when unsure).
    min_confidence: float = Field(0.0, ge=0, le=1)
    #: Per-task thresholds in place of ``threshold`` (e.g. a server whose users keep asking the larger model
    #: for chat lowers chat's alone).
    task_thresholds: dict[TaskId, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)

    def threshold_for(self, task: TaskId) -> float:
        return self.task_thresholds.get(task, self.threshold)


class RoutingPolicy(_Strict):
    tiers: dict[TaskId, Tier]
    #: Catalogue model serving each tier.
    models: dict[Tier, str]
    #: Optional per-task model (overrides the tier's model).
    task_models: dict[TaskId, str] = Field(default_factory=dict)
    escalation: Escalation = Escalation()

    @field_validator("tiers")
    @classmethod
    def _all_tasks(cls, v: dict[TaskId, Tier]) -> dict[TaskId, Tier]:
        missing = [t for t in TASKS if t not in v]
        if missing:
            raise ValueError(f"every task needs a tier; missing: {', '.join(missing)}")
        return v

    @field_validator("models")
    @classmethod
    def _both_tiers(cls, v: dict[Tier, str]) -> dict[Tier, str]:
        if set(v) != set(Tier):
            raise ValueError("needs a model for both tiers: small and large")
        return v

    def check_against(self, catalogue: Catalogue) -> None:
        pairs = [(f"models.{t.value}", n) for t, n in self.models.items()]
        pairs += [(f"task_models.{t}", n) for t, n in self.task_models.items()]
        for where, name in pairs:
            if name not in catalogue.models:
                raise ConfigError(
                    f"routing {where}: unknown model {name!r}; known: {', '.join(sorted(catalogue.models))}"
                )
            if isinstance(catalogue.models[name], ImageToTextModel):
                raise ConfigError(
                    f"routing {where}: {name!r} is an image-to-text model: it describes images for the text "
                    "models and cannot answer requests itself"
                )


class RoutingOverrides(_Strict):
    """What one server changed; ``None`` / missing keys mean 'use the default'."""

    task_models: dict[TaskId, str] = Field(default_factory=dict)
    threshold: float | None = Field(None, ge=0, le=1)
    task_thresholds: dict[TaskId, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)

    def apply(self, policy: RoutingPolicy) -> RoutingPolicy:
        escalation = policy.escalation
        if self.threshold is not None:
            escalation = escalation.model_copy(update={"threshold": self.threshold})
        if self.task_thresholds:
            merged = {**escalation.task_thresholds, **self.task_thresholds}
            escalation = escalation.model_copy(update={"task_thresholds": merged})
        return policy.model_copy(
            update={"task_models": {**policy.task_models, **self.task_models}, "escalation": escalation}
        )


def _expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in string values, so one file serves many deployments."""
    if isinstance(value, str):
        return _ENV.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", value)
    if isinstance(value, dict):
        return {k: _expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, env) for v in value]
    return value


def format_validation_error(exc: ValidationError, *, file: str | None = None) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    prefix = f"{file}: " if file else ""
    return prefix + "; ".join(parts)


def _load_yaml(path: Path, env: Mapping[str, str] | None = None) -> Any:
    try:
        return _expand_env(yaml.safe_load(path.read_text(encoding="utf-8")), os.environ if env is None else env)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_catalogue(path: Path | None = None, env: Mapping[str, str] | None = None) -> Catalogue:
    """``env``: what ``${VAR}`` reads (the settings' operator environment; default: the process environment)."""
    path = path or CONFIG_DIR / "models.yaml"
    try:
        return Catalogue.model_validate(_load_yaml(path, env))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, file=str(path))) from None


def load_routing(
    path: Path | None = None, catalogue: Catalogue | None = None, env: Mapping[str, str] | None = None
) -> RoutingPolicy:
    path = path or CONFIG_DIR / "routing.yaml"
    try:
        policy = RoutingPolicy.model_validate(_load_yaml(path, env))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, file=str(path))) from None
    if catalogue is not None:
        try:
            policy.check_against(catalogue)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return policy
