"""The SSRF guard: which addresses a URL tool may reach, redirects checked hop by hop, pinned connections."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from actors.errors import HostUnavailable, PermanentError, UnsafeURL
from actors.tools.http_safety import (
    USER_AGENT,
    address_problem,
    check_url,
    guarded_get,
    parse_allow_hosts,
    retry_after_seconds,
    target_of,
)
from interlock.settings import Settings, SettingsError
from testkit.fakes.http_server import FakeWebServer

NOTHING_ALLOWED = parse_allow_hosts("")


@pytest.fixture
def web() -> Iterator[FakeWebServer]:
    with FakeWebServer() as server:
        yield server


def _settings(**overrides: object) -> Settings:
    return Settings.from_env({}, **{"http_timeout": 2.0, **overrides})


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "address"),  # reserved (Python also calls it private)
        ("100.64.0.1", "public"),  # carrier-grade NAT: not a public address either
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str, problem: str) -> None:
    reason = address_problem(ipaddress.ip_address(address))
    assert reason is not None
    assert problem in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_x",
        "javascript:alert(1)",
        "//example.com/no-scheme",
        "http://user:secret@example.com/",
        "http:///no-host",
        "http://[::1/unclosed-bracket",
    ],
)
def test_only_plain_http_and_https_urls(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url, allow=NOTHING_ALLOWED)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/",
        "http://[::1]/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0177.0.0.1/",  # ... in octal
        "http://0x7f.1/",  # ... in hex, short form
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "https://0.0.0.0:443/",
    ],
)
def test_urls_resolving_to_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL, match="INTERLOCK_TOOLS_ALLOW_HOSTS"):
        check_url(url, allow=NOTHING_ALLOWED)


def test_allow_list_by_address_network_or_host_name() -> None:
    assert check_url("http://127.0.0.1:9/", allow=parse_allow_hosts("127.0.0.1")).port == 9
    assert check_url("http://127.0.0.2/", allow=parse_allow_hosts("127.0.0.0/8")).host == "127.0.0.2"
    target = check_url("http://LocalHost./x", allow=parse_allow_hosts(" localhost , 10.0.0.0/8"))
    assert target.host == "localhost"
    assert address_problem(target.address) == "a loopback address"
    with pytest.raises(UnsafeURL):
        check_url("http://10.0.0.1/", allow=parse_allow_hosts("127.0.0.1"))
    with pytest.raises(SettingsError):
        parse_allow_hosts("10.0.0.0/33")


def test_unresolvable_host_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="does not resolve"):
        check_url("http://no-such-host.invalid/", allow=NOTHING_ALLOWED)


def test_loopback_server_is_refused_without_the_allow_list(web: FakeWebServer) -> None:
    with pytest.raises(UnsafeURL, match="loopback"):
        guarded_get(web.url("/page"), settings=_settings())
    assert web.count() == 0  # refused before connecting


def test_allowed_get_sends_our_user_agent_and_the_host_name(web: FakeWebServer) -> None:
    url = f"http://localhost:{web.port}/json"
    response = guarded_get(url, settings=_settings(tools_allow_hosts="localhost"))
    response.close()
    assert response.status_code == 200
    assert response.url == url
    path, headers = web.requests[-1]
    assert path == "/json"
    assert headers["User-Agent"] == USER_AGENT
    # The connection went to the checked address, but the server still sees the name.
    assert headers["Host"] == f"localhost:{web.port}"


@pytest.mark.parametrize(("path", "problem"), [("/redirect-private", "private"), ("/redirect-metadata", "metadata")])
def test_redirect_to_a_private_address_is_refused(web: FakeWebServer, path: str, problem: str) -> None:
    with pytest.raises(UnsafeURL, match=problem):
        guarded_get(web.url(path), settings=_settings(tools_allow_hosts="127.0.0.1"))
    assert web.count(path) == 1


def test_redirect_to_loopback_is_refused_when_only_the_name_is_allowed(web: FakeWebServer) -> None:
    start = f"http://localhost:{web.port}/redirect?to=http://127.0.0.1:{web.port}/page"
    with pytest.raises(UnsafeURL, match="loopback"):
        guarded_get(start, settings=_settings(tools_allow_hosts="localhost"))
    assert web.count("/page") == 0


def test_redirects_are_followed_and_bounded(web: FakeWebServer) -> None:
    settings = _settings(tools_allow_hosts="127.0.0.1", http_max_redirects=3)
    response = guarded_get(web.url("/redirect?to=/page"), settings=settings)
    response.close()
    assert response.status_code == 200
    assert response.url == web.url("/page")
    with pytest.raises(PermanentError, match="more than 3 redirects"):
        guarded_get(web.url("/loop"), settings=settings)
    assert web.count("/loop") == 4


def test_environment_proxies_are_ignored(web: FakeWebServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    response = guarded_get(web.url("/json"), settings=_settings(tools_allow_hosts="127.0.0.1"))
    response.close()
    assert response.status_code == 200


def test_a_slow_host_is_transient(web: FakeWebServer) -> None:
    with pytest.raises(HostUnavailable, match="did not answer"):
        guarded_get(web.url("/slow?seconds=5"), settings=_settings(tools_allow_hosts="127.0.0.1", http_timeout=0.3))


def test_retry_after_as_seconds_or_http_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    seconds = retry_after_seconds(when)
    assert seconds is not None
    assert 100 < seconds <= 120


def test_breaker_target_is_host_and_port() -> None:
    assert target_of("https://API.example.com/v1?x=1") == "api.example.com"
    assert target_of("http://127.0.0.1:8080/a") == "127.0.0.1:8080"
