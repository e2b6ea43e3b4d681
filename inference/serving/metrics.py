"""Prometheus metrics shared by the two front ends (the Discord bot and ``python -m bot serve``).

The official client library; one :class:`Metrics` per application, each with its own registry, so two apps in
one process (tests) never share counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from inference.serving.service import Answer, Switchboard
    from inference.types import Tier

__all__ = ["CONTENT_TYPE_LATEST", "CUSTOM_MODEL", "Metrics"]

#: The label of every model a server's admins added: their names are theirs to choose (and to change), and each
#: name would be a series kept for the life of the process.
CUSTOM_MODEL = "custom"


class Metrics:
    """Switchboard's Prometheus metrics, in a registry of their own (one per app: no process-wide state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "switchboard_requests",
            "Requests answered, by route and outcome (ok, error, notice: no model was run)",
            ["task", "tier", "model", "outcome"],
            registry=r,
        )
        buckets = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
        self.latency = Histogram(
            "switchboard_request_seconds", "Time to the whole answer", ["task", "tier"], buckets=buckets, registry=r
        )
        self.first_token = Histogram(
            "switchboard_time_to_first_token_seconds",
            "Time to the answer's first token",
            ["task", "tier"],
            buckets=buckets,
            registry=r,
        )
        self.tokens = Counter("switchboard_generated_tokens", "Tokens generated", ["tier", "model"], registry=r)
        self.refusals = Counter(
            "switchboard_refusals",
            "Requests refused before a model answered (unauthorized, invalid_request, rate_limited, busy, ...)",
            ["reason"],
            registry=r,
        )
        self.errors = Counter("switchboard_errors", "Requests a model failed, by error", ["error"], registry=r)
        self.fallbacks = Counter(
            "switchboard_fallbacks", "Answers given by the other tier", ["from_tier", "to_tier"], registry=r
        )
        self.in_progress = Gauge("switchboard_requests_in_progress", "Requests being answered", registry=r)
        self.queue = Gauge(
            "switchboard_backend_in_flight", "Requests running or queued per model (queue depth)", ["model"], registry=r
        )

    def observe(
        self, task: str, chosen: Tier, answer: Answer, total_s: float, outcome: str = "ok", *, model: str | None = None
    ) -> None:
        """One answered request: its count, latency, first token, tokens and whether the other tier answered.

        ``model``: the label to count it under, when not the model's own name (see :data:`CUSTOM_MODEL`)."""
        tier, model = answer.tier.value, model or answer.model
        self.requests.labels(task, tier, model, outcome).inc()
        self.latency.labels(task, tier).observe(total_s)
        if answer.timings.first_token_s is not None:
            self.first_token.labels(task, tier).observe(answer.timings.first_token_s)
        self.tokens.labels(tier, model).inc(answer.timings.tokens)
        if answer.fell_back:
            self.fallbacks.labels(chosen.value, tier).inc()

    def queue_depths(self, board: Switchboard) -> None:
        """Set the in-flight gauge of every routed model (the model actually serving, after stand-ins)."""
        policy = board.router.policy
        for name in sorted({*policy.models.values(), *policy.task_models.values()}):
            actual = board.resolve(name)
            self.queue.labels(actual).set(board.backend_for(actual).in_flight)

    def page(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
