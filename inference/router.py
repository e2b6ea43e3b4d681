"""Turn a request into a tier and a model: score, then threshold (RouteLLM-style), explained.

The classifier scores the request (task, confidence, difficulty); the policy maps the task to its
default tier; a small-tier request escalates to the large tier when its difficulty reaches the
threshold, when it is long context, or when the classifier is unsure. The reason says which.
"""

from __future__ import annotations

from typing import Protocol

from inference.catalogue import Catalogue, RoutingOverrides, RoutingPolicy
from inference.classifier.bank import ExampleBank, Votes
from inference.errors import ConfigError
from inference.types import TASKS, Classification, Request, RouteDecision, TaskId, Tier

#: How close (cosine, over the classifier's embedding) a request must be to a server's corrected one to take its
#: correction. High on purpose: a correction is one example, and it should move near-repeats, not a whole task.
CORRECTION_SIMILARITY = 0.9


class Classifier(Protocol):
    def classify(self, request: Request) -> Classification: ...


class Router:
    def __init__(self, classifier: Classifier, policy: RoutingPolicy, catalogue: Catalogue) -> None:
        policy.check_against(catalogue)
        self.classifier = classifier
        self.policy = policy
        self.catalogue = catalogue

    def route(
        self,
        request: Request,
        *,
        task: TaskId | None = None,
        overrides: RoutingOverrides | None = None,
        catalogue: Catalogue | None = None,
        memory: ExampleBank | None = None,
    ) -> RouteDecision:
        """Decide tier and model. ``task`` forces the task (a user's explicit choice); ``memory`` holds a server's
        corrected requests, which override the classifier for requests close to one of them."""
        if task is not None and task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        scored = self.classifier.classify(request)
        return self.decide(request, scored, task=task, overrides=overrides, catalogue=catalogue, memory=memory)

    def decide(
        self,
        request: Request,
        scored: Classification,
        *,
        task: TaskId | None = None,
        overrides: RoutingOverrides | None = None,
        catalogue: Catalogue | None = None,
        memory: ExampleBank | None = None,
    ) -> RouteDecision:
        policy = overrides.apply(self.policy) if overrides else self.policy
        catalogue = catalogue or self.catalogue
        esc = policy.escalation
        corrected = _corrected(memory, scored) if task is None else None
        chosen: TaskId = task or (corrected.task if corrected else None) or scored.task
        confidence = 1.0 if task else scored.confidence
        default_tier = policy.tiers[chosen]
        why = [f"{chosen} (user's choice)" if task else f"{chosen} ({confidence:.0%} sure)"]
        if corrected is not None:
            confidence = 1.0
            why = [f"{chosen} (as this server corrected a similar request, similarity {corrected.similarity:.2f})"]
        if not task and scored.decided_by != "classifier":
            why[0] += f", decided by {scored.decided_by}"  # the unsure path (or an attachment) settled it

        tokens = scored.prompt_tokens + request.context_tokens
        escalate_because: list[str] = []
        threshold = esc.threshold_for(chosen)
        if default_tier is Tier.SMALL:
            if scored.difficulty >= threshold:
                detail = f" ({', '.join(scored.signals)})" if scored.signals else ""
                escalate_because.append(f"difficulty {scored.difficulty:.2f} >= {threshold:.2f}{detail}")
            if tokens > esc.long_context_tokens:
                escalate_because.append(f"long context: {tokens} tokens > {esc.long_context_tokens}")
            if not task and confidence < esc.min_confidence:
                escalate_because.append(f"unsure of the task ({confidence:.0%} < {esc.min_confidence:.0%})")
            if corrected is not None and corrected.hard >= 0.5:
                escalate_because.append("users here preferred the larger model for a similar request")

        if escalate_because:
            tier = Tier.LARGE
            why.append("escalated to large: " + "; ".join(escalate_because))
        else:
            tier = default_tier
            why.append(f"{tier.value} tier is the default for {chosen}")
            if tier is Tier.SMALL:
                why.append(f"difficulty {scored.difficulty:.2f} < {threshold:.2f}")

        model = policy.models[tier]
        task_model = policy.task_models.get(chosen)
        if task_model is not None:
            spec = catalogue.models.get(task_model)
            if spec is None:
                why.append(f"configured model {task_model!r} for {chosen} no longer exists; using {model}")
            elif spec.tier is tier:
                model = task_model
                why.append(f"model {model} set for {chosen}")
            else:
                why.append(f"{task_model} is a {spec.tier.value}-tier model; using {model}")
        elif chosen == "completion" and not getattr(catalogue.models.get(model), "base", False):
            # A continuation is what a base model does best: one of the same tier serves it where there is one.
            base = sorted(
                n for n, s in catalogue.models.items() if s.base and s.tier is tier and n not in catalogue.untrusted
            )
            if base:
                model = base[0]
                why.append(f"base model {model} preferred for completion")
        return RouteDecision(
            task=chosen,
            tier=tier,
            model=model,
            confidence=confidence,
            difficulty=scored.difficulty,
            reason="; ".join(why),
            escalated=bool(escalate_because),
        )


def _corrected(memory: ExampleBank | None, scored: Classification) -> Votes | None:
    """The vote of a server's corrected requests close to this one, if any is close enough."""
    if memory is None or scored.embedding is None or not len(memory):
        return None
    votes = memory.nearest(scored.embedding, k=3, min_similarity=CORRECTION_SIMILARITY)
    return votes if votes.task is not None else None
