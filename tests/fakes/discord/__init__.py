"""A protocol-faithful fake Discord (gateway + REST) for end-to-end tests of discord.py bots.

See tests/e2e/conftest.py for the fixtures (`fake_discord`, `run_bot`, `discord_errors`).
"""

from .openapi import OpenAPIValidator, Violation, load_validator
from .records import Interaction, InteractionSummary, RateLimitRule, RecordedFile, RecordedRequest, Step
from .server import FakeDiscord

__all__ = [
    "FakeDiscord",
    "Interaction",
    "InteractionSummary",
    "OpenAPIValidator",
    "RateLimitRule",
    "RecordedFile",
    "RecordedRequest",
    "Step",
    "Violation",
    "load_validator",
]
