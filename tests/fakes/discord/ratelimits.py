"""Rate limits: scripted 429s (`rate_limit` rules) and the X-RateLimit-* headers of every answer, per
route bucket and major parameter (`bucket_limit`, `bucket_window`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
import re

from .core import Core
from .records import ApiError, RateLimitRule, RecordedRequest


class RateLimitsMixin(Core):
    """429 rules and bucket headers."""

    # ------------------------------------------------------------------ test-facing

    def rate_limit(
        self,
        method: str | None,
        path_regex: str,
        *,
        times: int = 1,
        retry_after: float = 0.05,
        bucket: str | None = None,
        global_: bool = False,
        scope: str = "user",
    ) -> RateLimitRule:
        """Answer the next `times` requests with that method (None: any) and `re.search(path_regex, path)`
        with 429 as Discord does: body `{"message", "retry_after", "global", "code"}`, `Retry-After` and
        `X-RateLimit-*` headers (`bucket` names the bucket; default: the route's). discord.py sleeps
        `retry_after` and retries (at most 4 times per call). Keep `retry_after` small in tests."""
        rule = RateLimitRule(method, path_regex, times, retry_after, bucket, global_, "global" if global_ else scope)
        self.rate_limits.append(rule)
        return rule

    # ------------------------------------------------------------------ internals

    def _check_rate_limit(self, record: RecordedRequest) -> None:
        """Raise the 429 of the first active `rate_limit` rule the request matches."""
        for rule in self.rate_limits:
            if rule.remaining > 0 and record.matches(rule.method, rule.pattern):
                rule.hits.append(record)
                self._limited[record.index] = rule
                exc = ApiError(429, 0, "You are being rate limited.")
                exc.body.update(rule.body())
                raise exc

    @staticmethod
    def _major(path: str) -> str:
        """The major parameter Discord keys buckets on: channel, guild, or webhook/interaction + token."""
        found = re.match(r"^/(?:channels|guilds)/(\d+)|^/(?:webhooks|interactions)/(\d+/[^/]+)", path)
        return (found.group(1) or found.group(2)) if found else ""

    def _rate_limit_headers(self, record: RecordedRequest) -> dict[str, str]:
        """Discord's rate-limit headers for an answered request (Via marks it as Discord's, not Cloudflare's)."""
        headers = {"Via": "1.1 google"}
        rule = self._limited.pop(record.index, None)
        if rule is not None:
            headers["Retry-After"] = str(max(1, math.ceil(rule.retry_after)))  # whole seconds, as Discord sends
            headers["X-RateLimit-Scope"] = rule.scope
            if rule.global_:  # a global limit is not a route bucket's
                headers["X-RateLimit-Global"] = "true"
                return headers
        template = f"{record.method} {record.route or record.path}"
        bucket = (rule.bucket if rule else None) or hashlib.blake2b(template.encode(), digest_size=16).hexdigest()
        now = asyncio.get_running_loop().time()
        key = (bucket, self._major(record.path))
        end, used = self._bucket_use.get(key, (0.0, 0))
        if now >= end:
            end, used = now + self.bucket_window, 0
        if rule is None:
            used += 1
        self._bucket_use[key] = (end, used)
        reset_after = rule.retry_after if rule else end - now
        headers.update(
            {
                "X-RateLimit-Limit": str(self.bucket_limit),
                "X-RateLimit-Remaining": str(0 if rule else max(0, self.bucket_limit - used)),
                "X-RateLimit-Reset": f"{dt.datetime.now(dt.UTC).timestamp() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": bucket,
            }
        )
        return headers
