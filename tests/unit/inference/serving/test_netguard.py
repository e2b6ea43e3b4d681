"""The server-side request forgery guard: a table of refused and accepted endpoint URLs.

DNS is simulated with an injected resolve function: no test here touches the network, except the
request-time re-check, which talks to a fake server on 127.0.0.1 reached through a fake name.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
import pytest

from inference.backends.openai import OpenAIBackend
from inference.errors import BackendUnavailable, EndpointRejected
from inference.serving.netguard import Guard, UnsafeURL, is_public, parse_ip
from inference.types import ChatMessage, GenerationParams
from tests.fakes.openai_server import FakeOpenAIServer, openai_server, spec_for

__all__ = ["openai_server"]  # the fixture, imported for use below

FAKE_DNS = {
    "api.example.com": ["93.184.216.34"],
    "dual.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "evil.example.com": ["10.0.0.5"],  # a public-looking name pointing into the private network
    "mixed.example.com": ["93.184.216.34", "127.0.0.1"],  # one bad answer is enough to refuse
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "localhost": ["127.0.0.1", "::1"],
    "internal.corp": ["10.1.2.3"],
}


async def fake_resolve(host: str, port: int) -> Sequence[str]:
    try:
        return FAKE_DNS[host]
    except KeyError:
        raise OSError(-2, "Name or service not known") from None


def guard(**kw: object) -> Guard:
    return Guard(resolve=fake_resolve, **kw)  # type: ignore[arg-type]


REFUSED = [
    ("https://127.0.0.1/v1", "loopback"),
    ("https://localhost/v1", "loopback"),
    ("https://LOCALHOST./v1", "loopback"),
    ("https://foo.localhost/v1", "loopback"),
    ("https://[::1]/v1", "loopback"),
    ("https://[::ffff:127.0.0.1]/v1", "127.0.0.1"),
    ("https://0x7f000001/v1", "loopback"),
    ("https://2130706433/v1", "loopback"),
    ("https://127.1/v1", "loopback"),
    ("https://0177.0.0.1/v1", "loopback"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://10.0.0.5/v1", "private"),
    ("https://192.168.1.1/v1", "private"),
    ("https://0.0.0.0/v1", "unspecified"),
    ("https://224.0.0.1/v1", "multicast"),
    ("https://[fe80::1]/v1", "link-local"),
    ("https://[fd00::1]/v1", "private"),
    ("https://[64:ff9b::a00:5]/v1", "10.0.0.5"),  # NAT64 wrapping a private IPv4 address
    ("ftp://api.example.com/v1", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://api.example.com/", "scheme"),
    ("https://user:pass@api.example.com/v1", "user-info"),
    ("https://user@api.example.com/v1", "user-info"),
    ("http://api.example.com/v1", "https"),
    ("https://evil.example.com/v1", "resolves to a private address"),
    ("https://mixed.example.com/v1", "resolves to a loopback address"),
    ("https://mapped.example.com/v1", "resolves to a loopback address"),
    ("https://does-not-exist.example/v1", "cannot be resolved"),
    ("https://exa mple.com/v1", "whitespace"),
    ("https://%31%32%37.0.0.1/v1", "not a valid host"),
    # DNS limits: refused with a reason, not a UnicodeError from the IDNA codec.
    (f"https://{'a' * 64}.example.com/v1", "over 63 characters"),
    (f"https://{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 63}.com/v1", "too long"),
    (f"https://xn--{'a' * 70}.com/v1", "over 63 characters"),
    (f"https://{'é' * 70}.com/v1", "not a valid host name"),
]

#: What the fake DNS answers for names; a refusal may name the host, never one of these.
INTERNAL_ANSWERS = ("10.0.0.5", "127.0.0.1", "::ffff:127.0.0.1", "10.1.2.3")


@pytest.mark.parametrize(("url", "reason"), REFUSED)
async def test_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        await guard().check_resolved(url)
    assert reason in str(info.value)
    assert len(str(info.value)) < 300  # a long host is shortened, not echoed whole


@pytest.mark.parametrize("host", ["evil.example.com", "mixed.example.com", "mapped.example.com", "internal.corp"])
async def test_refusal_of_a_name_never_shows_its_internal_address(host: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        await guard().check_resolved(f"https://{host}/v1")
    assert host in str(info.value)
    assert not [a for a in INTERNAL_ANSWERS if a in str(info.value)], str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1",
        "https://API.Example.com:8443/v1",
        "https://dual.example.com/v1",
        "https://93.184.216.34/v1",
    ],
)
async def test_public_https_accepted(url: str) -> None:
    await guard().check_resolved(url)


@pytest.mark.parametrize(
    ("url", "kw"),
    [
        ("https://10.0.0.5/v1", {"allow_private": True}),
        ("https://internal.corp/v1", {"allow_private": True}),
        ("https://evil.example.com/v1", {"allow_private": True}),
        ("http://internal.corp:8000/v1", {"allowed_hosts": ["internal.corp"]}),
        ("http://127.0.0.1:8000/v1", {"allowed_hosts": ["127.0.0.1"]}),
        ("http://[::1]:8000/v1", {"allowed_hosts": ["[::1]"]}),
        ("http://localhost:8000/v1", {"allowed_hosts": ["LOCALHOST"]}),
    ],
)
async def test_private_accepted_when_operator_allows(url: str, kw: dict[str, object]) -> None:
    await guard(**kw).check_resolved(url)


async def test_allow_private_still_requires_https_and_no_userinfo() -> None:
    g = guard(allow_private=True)
    with pytest.raises(UnsafeURL, match="https"):
        g.check_url("http://10.0.0.5/v1")
    with pytest.raises(UnsafeURL, match="user-info"):
        g.check_url("https://a:b@10.0.0.5/v1")
    with pytest.raises(UnsafeURL, match="scheme"):
        g.check_url("file:///etc/passwd")


def test_check_url_needs_no_dns() -> None:
    def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError("check_url must not resolve")

    g = Guard(resolve=no_dns)  # type: ignore[arg-type]
    g.check_url("https://api.example.com/v1")
    with pytest.raises(UnsafeURL):
        g.check_url("https://0x7f000001/v1")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("api.example.com", None),
        ("cafe.be", None),
        ("1.2.3.4 x", None),
    ],
)
def test_parse_ip(host: str, expected: str | None) -> None:
    ip = parse_ip(host)
    assert (str(ip) if ip is not None else None) == expected


def test_is_public() -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address("8.8.8.8"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.5"))
    assert not is_public(ipaddress.ip_address("100.64.0.1"))  # carrier-grade NAT
    assert not is_public(ipaddress.ip_address("2002:7f00:1::"))  # 6to4 wrapping 127.0.0.1


async def test_guarded_resolver_refuses_private_answer() -> None:
    resolver = guard().resolver()
    with pytest.raises(UnsafeURL, match="resolves to a private address") as info:
        await resolver.resolve("evil.example.com", 443)
    assert "10.0.0.5" not in str(info.value)
    results = await resolver.resolve("api.example.com", 443)
    assert [r["host"] for r in results] == ["93.184.216.34"]


async def test_system_resolver_is_used_by_default() -> None:
    # "localhost" resolves through the real getaddrinfo (no network: it comes from /etc/hosts).
    with pytest.raises(UnsafeURL):
        await Guard().check_resolved("https://localhost/v1")
    with pytest.raises(UnsafeURL, match="loopback"):
        await Guard().resolver().resolve("localhost", 443)


# --- request time: the HTTP backend re-checks the address it connects to ----------------------------


def _rebinding_resolver(answers: list[list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[str]:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return resolve


async def test_request_time_recheck_blocks_rebinding(openai_server: FakeOpenAIServer) -> None:
    # Public when the admin added it, loopback (where the fake server listens) when the request is made.
    g = Guard(resolve=_rebinding_resolver([["93.184.216.34"], ["127.0.0.1"]]))
    await g.check_resolved(f"https://rebind.example.com:{openai_server.port}/v1")
    async with aiohttp.ClientSession(connector=g.connector()) as session:
        with pytest.raises(UnsafeURL, match="resolves to a loopback address") as info:
            await session.get(f"http://rebind.example.com:{openai_server.port}/v1/models")
        assert "127.0.0.1" not in str(info.value)
    assert openai_server.requests == []  # refused before any byte was sent


async def test_request_time_allowed_host_reaches_server(openai_server: FakeOpenAIServer) -> None:
    url = f"http://models.internal:{openai_server.port}/v1"
    g = Guard(allowed_hosts={"models.internal"}, resolve=_rebinding_resolver([["127.0.0.1"]]))
    backend = OpenAIBackend("internal", spec_for(url), guard=g)
    try:
        await backend.start()
        text = await backend.stream([ChatMessage("user", "hi")], GenerationParams()).text()
    finally:
        await backend.aclose()
    assert text
    assert openai_server.completions[0].headers["Host"].startswith("models.internal")


async def test_backend_refuses_literal_private_ip_on_each_request() -> None:
    backend = OpenAIBackend("lit", spec_for("https://10.0.0.5/v1"), guard=Guard())
    try:
        with pytest.raises(EndpointRejected, match="private"):
            await backend.start()
        with pytest.raises(EndpointRejected, match="private"):
            await backend.stream([ChatMessage("user", "hi")], GenerationParams()).text()
        assert await backend.probe() is False
    finally:
        await backend.aclose()


async def test_dns_failure_is_unavailable_not_rejected() -> None:
    # A name that does not resolve may resolve later: retryable, unlike an unsafe address.
    backend = OpenAIBackend("nowhere", spec_for("https://nowhere.example/v1"), guard=guard())
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.start()
        assert not isinstance(info.value, EndpointRejected) and info.value.retryable
        with pytest.raises(BackendUnavailable) as info:
            await backend.stream([ChatMessage("user", "hi")], GenerationParams()).text()
        assert not isinstance(info.value, EndpointRejected) and info.value.retryable
    finally:
        await backend.aclose()


def test_guard_repr_and_allowed_hosts_normalised() -> None:
    g = Guard(allowed_hosts=["Models.Internal.", "[::1]"])
    assert g.allowed_hosts == frozenset({"models.internal", "::1"})
    assert g.is_allowed_host("MODELS.internal")
    assert "models.internal" in repr(g)
