"""The send-time SSRF guard: allowlist, IP spellings, schemes and resolution."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import psycopg
import pytest

from pgmsg.errors import InvalidInput, PgmsgError
from pgmsg.ssrf import (
    Allowlist,
    BlockedTarget,
    check_address,
    check_url,
    normalise_ip,
    parse_host,
)

#: pgmsg_blocked_networks as the deployed database holds it (migration 028): the one list.
BLOCKED: list[tuple[str, str]] = []


@pytest.fixture(autouse=True, scope="module")
def _blocked_networks(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        BLOCKED[:] = conn.execute("SELECT network::text, reason FROM pgmsg_blocked_networks").fetchall()


def allow(entries: list[str] | str) -> Allowlist:
    return Allowlist.parse(entries, BLOCKED)


def loopback_only() -> Allowlist:
    return allow(["127.0.0.1/32"])


def fake_resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """A resolver that answers from ``table`` and never touches the network."""

    def resolve(host: str, port: int) -> list[str]:
        return list(table.get(host, []))

    return resolve


def no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"IP literal {host!r} must not be resolved")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "https://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.0.1./",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "HTTP://127.0.0.1/",
    ],
)
def test_allowed_ip_literals(url: str) -> None:
    assert check_url(url, loopback_only(), resolve=no_resolver) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.5/", "not in the allowlist (127.0.0.1/32)"),
        ("http://192.168.1.1/", "not in the allowlist"),
        ("http://172.16.0.1/", "not in the allowlist"),
        ("http://127.0.0.2/", "not in the allowlist"),
        ("http://169.254.169.254/latest/meta-data/", "link-local / cloud metadata address"),
        ("http://[fe80::1]/", "link-local address"),
        ("http://[fe80::1%25eth0]/", "link-local address"),
        ("http://[::ffff:169.254.169.254]/", "link-local / cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/", "not in the allowlist"),
        ("http://2852039166/", "link-local / cloud metadata address"),
        ("http://0xa9fea9fe/", "link-local / cloud metadata address"),
        ("http://0251.0376.0251.0376/", "link-local / cloud metadata address"),
        ("http://169.254.43518/", "link-local / cloud metadata address"),
        ("http://[::1]/", "not in the allowlist"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://0/", "unspecified"),
        ("http://100.100.100.200/", "Alibaba Cloud metadata address"),
        ("http://[fd00:ec2::254]/", "AWS IPv6 metadata address"),
        ("http://224.0.0.1/", "multicast address"),
        ("http://255.255.255.255/", "broadcast address"),
    ],
)
def test_refused_ip_literals(url: str, reason: str) -> None:
    with pytest.raises(BlockedTarget, match=r"^webhook target .* refused: ") as caught:
        check_url(url, loopback_only(), resolve=no_resolver)
    assert reason in str(caught.value)


def test_message_names_the_address_and_the_spelling() -> None:
    with pytest.raises(BlockedTarget) as caught:
        check_url("http://2852039166/", loopback_only(), resolve=no_resolver)
    assert str(caught.value) == (
        "webhook target 2852039166 (169.254.169.254) refused: link-local / cloud metadata address"
    )
    with pytest.raises(BlockedTarget) as caught:
        check_url("http://10.1.2.3/", loopback_only(), resolve=no_resolver)
    assert str(caught.value) == "webhook target 10.1.2.3 refused: not in the allowlist (127.0.0.1/32)"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/file",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "//127.0.0.1/",
    ],
)
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(BlockedTarget, match="is not http or https"):
        check_url(url, loopback_only(), resolve=no_resolver)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@127.0.0.1/",
        "http://user@127.0.0.1/",
        "http://127.0.0.1@169.254.169.254/",
        "http://evil.example\\@127.0.0.1/",
    ],
)
def test_userinfo_is_refused(url: str) -> None:
    with pytest.raises(BlockedTarget, match=r"user:password@ are not allowed"):
        check_url(url, loopback_only(), resolve=no_resolver)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http:///x", "has no host"),
        ("http://:8080/", "has no host"),
        ("http://127.0.0.1:99999/", "malformed"),
        ("http://127.0.0.1 /", "whitespace or control characters"),
        ("http://127.0.0.1\t.evil/", "whitespace or control characters"),
        ("http://127.0.0.1\\.evil.example/", "invalid host"),
        ("http://1.2.3.4.5/", "too many parts"),
        ("http://127.0.0.256/", "out of range"),
        ("http://08.0.0.1/", "malformed"),
        ("http://[::ffff:0x7f.1]/", "not a valid IPv6 address|malformed"),
    ],
)
def test_malformed_urls_are_invalid_input(url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_url(url, loopback_only(), resolve=no_resolver)


def test_parse_host() -> None:
    assert parse_host("https://Hooks.Example.COM:8443/a?b#c") == "hooks.example.com"
    assert parse_host("http://[::1]:8080/") == "::1"
    assert parse_host("http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/") == "127.0.0.1"
    with pytest.raises(BlockedTarget):
        parse_host("file:///etc/passwd")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:7f00:1", "127.0.0.1"),
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.258", "10.0.1.2"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_normalise_ip_recognises_every_spelling(host: str, expected: str) -> None:
    assert normalise_ip(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("host", ["localhost", "hooks.example.com", "cafe", "0xdead.example", "a-1.b_c"])
def test_normalise_ip_leaves_hostnames_alone(host: str) -> None:
    assert normalise_ip(host) is None


@pytest.mark.parametrize("host", ["1.2.3.4.5", "example.123", "1..1", "0x1g.1", "256.1.1.1", "+1.1"])
def test_normalise_ip_refuses_malformed_numbers(host: str) -> None:
    with pytest.raises(InvalidInput, match="looks like an IPv4 address"):
        normalise_ip(host)


def test_hostname_resolving_to_private_address_is_refused() -> None:
    resolve = fake_resolver({"internal.example": ["10.0.0.1"]})
    expected = r"internal\.example \(10\.0\.0\.1\) refused: not in the allowlist"
    with pytest.raises(BlockedTarget, match=expected):
        check_url("http://internal.example/hook", loopback_only(), resolve=resolve)


def test_hostname_resolving_to_allowlisted_address_is_allowed() -> None:
    seen: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["127.0.0.1", "127.0.0.1"]

    assert check_url("https://hooks.test/x", loopback_only(), resolve=resolve) == ["127.0.0.1"]
    assert seen == [("hooks.test", 443)]


def test_every_resolved_address_must_pass() -> None:
    resolve = fake_resolver({"mixed.example": ["127.0.0.1", "10.0.0.1"]})
    with pytest.raises(BlockedTarget, match=r"10\.0\.0\.1"):
        check_url("http://mixed.example:8080/", loopback_only(), resolve=resolve)


def test_resolved_ipv4_mapped_addresses_are_checked_as_ipv4() -> None:
    resolve = fake_resolver({"mapped.example": ["::ffff:169.254.169.254"]})
    allow_all = allow(["0.0.0.0/0", "::/0"])
    with pytest.raises(BlockedTarget, match="cloud metadata"):
        check_url("http://mapped.example/", allow_all, resolve=resolve)


def test_host_pattern_skips_the_network_allowlist() -> None:
    allowlist = allow(["127.0.0.1/32", "*.internal.example", "hooks.example.com"])
    # The resolver gets the lowercased name with its trailing dot, as libcurl would.
    resolve = fake_resolver({"a.b.internal.example": ["10.1.2.3"], "hooks.example.com.": ["192.168.0.9"]})
    assert check_url("http://a.b.internal.example/", allowlist, resolve=resolve) == ["10.1.2.3"]
    assert check_url("http://HOOKS.example.com./", allowlist, resolve=resolve) == ["192.168.0.9"]


def test_wildcard_does_not_match_the_bare_name_or_lookalikes() -> None:
    allowlist = allow(["*.internal.example"])
    resolve = fake_resolver({"internal.example": ["10.1.2.3"], "evilinternal.example": ["10.1.2.3"]})
    for url in ("http://internal.example/", "http://evilinternal.example/"):
        with pytest.raises(BlockedTarget, match="not in the allowlist"):
            check_url(url, allowlist, resolve=resolve)


def test_host_pattern_resolving_to_metadata_is_still_refused() -> None:
    allowlist = allow(["hooks.example.com"])
    resolve = fake_resolver({"hooks.example.com": ["203.0.113.7", "169.254.169.254"]})
    with pytest.raises(BlockedTarget, match="link-local / cloud metadata address"):
        check_url("https://hooks.example.com/", allowlist, resolve=resolve)


def test_unresolvable_name_is_refused() -> None:
    with pytest.raises(BlockedTarget, match="nowhere.example refused: does not resolve"):
        check_url("http://nowhere.example/", loopback_only(), resolve=fake_resolver({}))

    def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(BlockedTarget, match="does not resolve .*Name or service not known"):
        check_url("http://nowhere.example/", loopback_only(), resolve=failing)


def test_localhost_with_the_real_resolver() -> None:
    allowlist = allow(["127.0.0.1/32", "::1/128"])
    addresses = check_url("http://localhost:8080/webhook", allowlist)
    assert addresses
    assert set(addresses) <= {"127.0.0.1", "::1"}


def test_always_blocked_beats_a_catch_all_allowlist() -> None:
    allow_all = allow(["0.0.0.0/0", "::/0"])
    with pytest.raises(BlockedTarget, match="cloud metadata"):
        check_url("http://169.254.169.254/", allow_all, resolve=no_resolver)
    # Translated IPv6 forms reach the same IPv4 address.
    for url in ("http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/"):
        with pytest.raises(BlockedTarget, match="cloud metadata"):
            check_url(url, allow_all, resolve=no_resolver)
    assert check_url("http://10.0.0.5/", allow_all, resolve=no_resolver) == ["10.0.0.5"]


def test_always_blocked_covers_the_required_networks() -> None:
    required = [
        "169.254.0.0/16",
        "fe80::/10",
        "0.0.0.0/8",
        "100.100.100.200/32",
        "fd00:ec2::254/128",
        "224.0.0.0/4",
        "ff00::/8",
        "255.255.255.255/32",
        "::/128",
    ]
    assert {ipaddress.ip_network(cidr) for cidr in required} <= {network for network, _ in allow([]).blocked}


def test_an_allowlist_without_the_blocked_networks_is_refused() -> None:
    with pytest.raises(InvalidInput, match="pgmsg_blocked_networks"):
        Allowlist.parse(["0.0.0.0/0"], [])


def test_check_address() -> None:
    check_address(ipaddress.ip_address("127.0.0.1"), loopback_only())
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), loopback_only())
    with pytest.raises(BlockedTarget, match="not in the allowlist"):
        check_address(ipaddress.ip_address("10.0.0.1"), loopback_only())
    with pytest.raises(BlockedTarget, match="not in the allowlist \\(the allowlist is empty\\)"):
        check_address(ipaddress.ip_address("127.0.0.1"), allow([]))


def test_allowlist_parse() -> None:
    entries = [" 127.0.0.1 ", "10.0.0.0/8", "::1", "Hooks.Example.com.", "*.internal.example"]
    allowlist = allow(entries)
    assert allowlist.networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert allowlist.hosts == ("hooks.example.com", "*.internal.example")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["10.0.0.1/8"], "host bits set"),
        (["10.0.0.0/33"], "10.0.0.0/33"),
        (["300.1.2.3"], "300.1.2.3"),
        (["127.1"], "127.1"),
        (["::ffff:127.0.0.1"], "IPv4-mapped"),
        ([""], "empty"),
        (["   "], "empty"),
        (["*"], "leading"),
        (["hooks.*.example"], "leading"),
        (["*."], "leading"),
        (["*.-x.example"], "not a valid hostname"),
        (["bad host.example"], "spaces, control or non-ASCII"),
        (["-bad.example"], "not a valid hostname"),
        (["http://hooks.example.com"], "invalid allowlist entry"),
        ("127.0.0.1/32", "not one string"),
    ],
)
def test_allowlist_parse_errors(entries: list[str] | str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        allow(entries)
    assert isinstance(caught.value, PgmsgError)
