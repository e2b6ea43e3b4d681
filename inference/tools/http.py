"""Operator-defined tools that are HTTP endpoints, described in ``config/tools.yaml`` (optional, empty by default).

Each entry names the tool, says what it does, gives the JSON Schema of its arguments, and the URL and method to
call: GET sends the arguments as the query string, POST as a JSON body. The call goes through the same network
guard as model endpoints (:mod:`inference.serving.netguard`: https unless the operator allows the host, public
addresses only, re-checked at connect time, redirects not followed), within the tool's time limit, and reads at
most ``max_response_bytes`` of the answer. ``${VAR}`` in the file reads the operator's environment (for an API key
in a header), as in ``config/models.yaml``.

.. code-block:: yaml

    tools:
      - name: weather
        description: Current weather for a city.
        url: https://weather.example.com/v1/current
        method: GET
        parameters:
          type: object
          properties: {city: {type: string, maxLength: 80}}
          required: [city]
        headers: {X-Api-Key: "${WEATHER_API_KEY}"}
        timeout_s: 8
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from inference.catalogue import CONFIG_DIR, _load_yaml, format_validation_error
from inference.errors import ConfigError
from inference.serving import netguard
from inference.tools.base import Tool, ToolBox, ToolError

#: Where the operator's HTTP tools are described (absent: none).
DEFAULT_PATH = CONFIG_DIR / "tools.yaml"
#: Most bytes of an endpoint's answer read by default, and the most an operator may allow.
DEFAULT_MAX_RESPONSE = 64 << 10
MAX_RESPONSE_LIMIT = 1 << 20


class HttpToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = Field(min_length=1, max_length=1000)
    url: str
    method: Literal["GET", "POST"] = "GET"
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    #: Sent with every call (an API key from ``${VAR}``); secret: never shown in a repr or an error.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE, gt=0, le=MAX_RESPONSE_LIMIT)
    #: Whether a call changes something (creates a ticket, sends a message): then it runs only after the person
    #: asking confirms, and never in an unattended run. Unset: a POST acts, a GET only reads.
    acts: bool | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return v


class ToolsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[HttpToolSpec] = Field(default_factory=list)


def load_tools_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> ToolsConfig:
    """The operator's HTTP tools; the default file may be absent (no tools), a named one must exist."""
    if path is None and not DEFAULT_PATH.exists():
        return ToolsConfig()
    path = path or DEFAULT_PATH
    data = _load_yaml(path, env)
    try:
        config = ToolsConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, file=str(path))) from None
    try:  # names, schemas: what the toolbox would refuse, refused at load with the file named
        ToolBox([HttpTool(spec) for spec in config.tools])
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


class HttpTool(Tool):
    """One operator-defined endpoint as a tool."""

    def __init__(self, spec: HttpToolSpec, guard: netguard.Guard | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.parameters = spec.parameters
        self.timeout_s = spec.timeout_s
        # A POST may change something on the other side: confirmed by the person unless the operator says not.
        self.acts = spec.acts if spec.acts is not None else spec.method == "POST"
        #: Without one, the strictest guard: https to public addresses only.
        self._guard = guard or netguard.Guard()

    def __repr__(self) -> str:
        return f"HttpTool(name={self.name!r}, method={self.spec.method!r}, url={self.spec.url!r})"

    async def run(self, args: dict[str, Any]) -> str | dict[str, Any]:
        spec = self.spec
        try:
            await self._guard.check_resolved(spec.url)
        except netguard.UnsafeURL as exc:
            raise ToolError(f"the endpoint is refused: {exc}") from None
        headers = {"Accept": "application/json, text/plain;q=0.9"}
        headers.update({k: v.get_secret_value() for k, v in spec.headers.items()})
        request: dict[str, Any] = {"params": _query(args)} if spec.method == "GET" else {"json": args}
        # A guarded connector per call: the addresses aiohttp connects to are the ones the guard saw.
        async with aiohttp.ClientSession(connector=self._guard.connector()) as session:
            try:
                async with session.request(
                    spec.method,
                    spec.url,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                    **request,
                ) as resp:
                    if resp.status >= 300:
                        raise ToolError(f"the endpoint answered HTTP {resp.status}")
                    body = await _read_bounded(resp, spec.max_response_bytes)
                    ctype = resp.headers.get("Content-Type", "").lower()
            except netguard.UnsafeURL as exc:  # raised by the guarded resolver at connect time
                raise ToolError(f"the endpoint is refused: {exc}") from None
            except aiohttp.ClientError as exc:
                raise ToolError(f"the endpoint could not be reached ({type(exc).__name__})") from None
        text = body.decode("utf-8", "replace")
        if "json" in ctype:
            try:
                value = json.loads(text)
            except ValueError:
                return text
            return value if isinstance(value, dict) else json.dumps(value, ensure_ascii=False)
        return text


def _query(args: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in args.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str):
            out[key] = value
        else:
            out[key] = json.dumps(value, ensure_ascii=False)
    return out


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise ToolError(f"the endpoint's answer is too large (over {limit} bytes)")
    buf = bytearray()
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise ToolError(f"the endpoint's answer is too large (over {limit} bytes)")
    return bytes(buf)


def http_tools(config: ToolsConfig, guard: netguard.Guard | None = None) -> list[HttpTool]:
    return [HttpTool(spec, guard) for spec in config.tools]
