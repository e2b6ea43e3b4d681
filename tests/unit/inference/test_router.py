"""Routing policy: default tiers, escalation by score/threshold and long context, overrides."""

from __future__ import annotations

import pytest

from inference.catalogue import RoutingOverrides, load_catalogue, load_routing
from inference.errors import ConfigError
from inference.router import Router
from inference.types import TASKS, Classification, Request, TaskId, Tier


class FixedClassifier:
    """Returns a preset score: the router's logic is tested apart from the model."""

    def __init__(
        self,
        task: TaskId,
        difficulty: float = 0.1,
        confidence: float = 0.9,
        tokens: int = 10,
        signals: tuple[str, ...] = (),
    ) -> None:
        self.result = Classification(
            task=task, confidence=confidence, difficulty=difficulty, signals=signals, prompt_tokens=tokens
        )

    def classify(self, request: Request) -> Classification:
        return self.result


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


@pytest.fixture(scope="module")
def policy(catalogue):
    return load_routing(catalogue=catalogue)


def router_for(policy, catalogue, **kw) -> Router:
    return Router(FixedClassifier(**kw), policy, catalogue)


@pytest.mark.parametrize("task", TASKS)
def test_default_tier_per_task(task, policy, catalogue):
    decision = router_for(policy, catalogue, task=task).route(Request("x"))
    expected = policy.tiers[task]  # config/routing.yaml is the only copy of the policy
    assert decision.tier is expected
    assert decision.model == policy.models[expected]
    assert not decision.escalated
    assert task in decision.reason


def test_hard_small_task_escalates_with_reason(policy, catalogue):
    r = router_for(policy, catalogue, task="chat", difficulty=0.8, signals=("maths word problem",))
    decision = r.route(Request("A train leaves at 3pm..."))
    assert decision.tier is Tier.LARGE and decision.escalated
    assert "0.80 >= 0.50" in decision.reason and "maths word problem" in decision.reason


def test_threshold_is_inclusive_and_configurable(policy, catalogue):
    r = router_for(policy, catalogue, task="chat", difficulty=0.5)
    assert r.route(Request("x")).tier is Tier.LARGE
    lenient = RoutingOverrides(threshold=0.9)
    assert r.route(Request("x"), overrides=lenient).tier is Tier.SMALL


def test_long_context_escalates(policy, catalogue):
    r = router_for(policy, catalogue, task="conversion", difficulty=0.0, tokens=1000)
    assert r.route(Request("x")).tier is Tier.SMALL
    decision = r.route(Request("x", context_tokens=600))
    assert decision.tier is Tier.LARGE and "long context: 1600 tokens" in decision.reason


def test_large_tasks_never_deescalate(policy, catalogue):
    decision = router_for(policy, catalogue, task="code", difficulty=0.0).route(Request("x"))
    assert decision.tier is Tier.LARGE and not decision.escalated


def test_forced_task_overrides_classifier(policy, catalogue):
    decision = router_for(policy, catalogue, task="code", confidence=0.4).route(Request("x"), task="chat")
    assert decision.task == "chat" and decision.tier is Tier.SMALL
    assert decision.confidence == 1.0 and "user's choice" in decision.reason


def test_unknown_forced_task_lists_valid_ones(policy, catalogue):
    with pytest.raises(ConfigError, match="valid tasks: classification"):
        router_for(policy, catalogue, task="chat").route(Request("x"), task="poetry")  # type: ignore[arg-type]


def test_low_confidence_escalates_when_configured(policy, catalogue):
    strict = policy.model_copy(update={"escalation": policy.escalation.model_copy(update={"min_confidence": 0.6})})
    decision = Router(FixedClassifier("chat", confidence=0.3), strict, catalogue).route(Request("x"))
    assert decision.tier is Tier.LARGE and "unsure" in decision.reason


def test_per_task_model_override_used_when_tier_matches(policy, catalogue):
    overrides = RoutingOverrides(task_models={"code": "smollm2-local"})
    decision = router_for(policy, catalogue, task="code").route(Request("x"), overrides=overrides)
    assert decision.model == "smollm2-local"
    # A small-tier model set for a task that escalated is not used for the large tier.
    overrides = RoutingOverrides(task_models={"chat": "smollm2-onnx"})
    hard = router_for(policy, catalogue, task="chat", difficulty=0.9).route(Request("x"), overrides=overrides)
    assert hard.model == policy.models[Tier.LARGE] and "small-tier model" in hard.reason


def test_overrides_do_not_mutate_the_default_policy(policy, catalogue):
    before = policy.escalation.threshold
    RoutingOverrides(threshold=before / 2, task_models={"chat": "smollm2-local"}).apply(policy)
    assert policy.escalation.threshold == before and "chat" not in policy.task_models


def test_as_json_has_the_cli_contract_keys(policy, catalogue):
    out = router_for(policy, catalogue, task="grammar").route(Request("x")).as_json()
    assert set(out) == {"task", "tier", "model", "confidence", "reason"}
    assert out["tier"] == "small" and isinstance(out["confidence"], float)


def test_completion_prefers_a_base_model_of_its_tier(policy, catalogue):
    small = policy.models[Tier.SMALL]
    base = catalogue.get(small).model_copy(update={"base": True})
    with_base = catalogue.with_models({"zz-base": base}, untrusted=False)
    decision = router_for(policy, with_base, task="completion").route(Request("Once upon a time"))
    assert decision.tier is policy.tiers["completion"] and decision.model == "zz-base"
    assert "base model zz-base preferred for completion" in decision.reason
    # Other tasks keep the tier's model; a base model a server added is not picked for everyone.
    assert router_for(policy, with_base, task="chat").route(Request("hi")).model == small
    untrusted = catalogue.with_models({"zz-base": base})
    assert router_for(policy, untrusted, task="completion").route(Request("x")).model == small


class EmbeddingClassifier:
    """Chat, small and easy, with an embedding per text given by hand."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def classify(self, request: Request) -> Classification:
        import numpy as np

        vector = np.asarray(self.vectors[request.text], dtype=np.float32)
        return Classification(
            task="chat", confidence=0.9, difficulty=0.1, prompt_tokens=5, embedding=vector / np.linalg.norm(vector)
        )


def test_a_servers_corrections_move_close_requests_and_nothing_else(policy, catalogue):
    from inference.classifier.bank import ExampleBank

    router = Router(
        EmbeddingClassifier({"spam?": [1, 0, 0], "spam??": [0.98, 0.2, 0], "hello": [0, 1, 0], "code it": [0, 0, 1]}),
        policy,
        catalogue,
    )
    memory = ExampleBank(3)
    memory.add([1.0, 0.0, 0.0], "classification", False)  # "Wrong task?": this was classification
    memory.add([0.0, 0.0, 1.0], "chat", True)  # "Ask the larger model" on a chat request
    close = router.route(Request("spam??"), memory=memory)
    assert (close.task, close.tier) == ("classification", Tier.SMALL)
    assert "as this server corrected a similar request, similarity 0.98" in close.reason
    larger = router.route(Request("code it"), memory=memory)
    assert (larger.task, larger.tier) == ("chat", Tier.LARGE)
    assert "users here preferred the larger model" in larger.reason
    # Far from every correction, without a memory, or with the task forced: the usual route.
    assert router.route(Request("hello"), memory=memory).task == "chat"
    assert router.route(Request("spam?")).task == "chat"
    assert router.route(Request("spam?"), memory=memory, task="code").task == "code"


def test_a_task_threshold_applies_to_that_task_only(policy, catalogue):
    overrides = RoutingOverrides(task_thresholds={"chat": 0.3})
    chat = router_for(policy, catalogue, task="chat", difficulty=0.4).route(Request("x"), overrides=overrides)
    assert chat.tier is Tier.LARGE and "difficulty 0.40 >= 0.30" in chat.reason
    other = router_for(policy, catalogue, task="conversion", difficulty=0.4).route(Request("x"), overrides=overrides)
    assert other.tier is Tier.SMALL and "difficulty 0.40 < 0.50" in other.reason
    assert policy.escalation.task_thresholds == {}  # the default policy is untouched
