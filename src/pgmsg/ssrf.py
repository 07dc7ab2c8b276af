"""Send-time SSRF guard for webhook targets.

The database already refuses malformed webhook URLs when a subscription is
written; this check runs again right before a request goes out, because a
hostname can resolve to something else by then, and because the URL parsers
of libcurl and browsers accept IP spellings (``2130706433``, ``0x7f.1``,
``0177.0.0.1``, ``[::ffff:127.0.0.1]``) that a naive filter reads as names.

The policy is deny by default: a target must be covered by the allowlist, and
a few networks (link-local, cloud metadata, multicast, broadcast, unspecified)
are refused even when an allowlist entry covers them. Both lists live in the
database, which the in-transaction push checks against too: the allowlist in
pgmsg_webhook_allowlist, the networks refused always, with the reason shown, in
pgmsg_blocked_networks (migration 028). Callers read both and build an
``Allowlist`` from them.

To avoid DNS rebinding between this check and the request, the caller should
connect to one of the addresses ``check_url`` returns rather than resolving the
name again.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pgmsg.errors import InvalidInput, PgmsgError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class BlockedTarget(PgmsgError):
    """A webhook target was refused by the SSRF policy; the message says why."""


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
# Translators route these IPv6 prefixes to the IPv4 address embedded in them.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# The grammar of allowlist entries, shared with pgmsg_allowlist_entry_problem (migration 018):
# dotted-quad IPv4 without leading zeros or IPv6, each with an optional decimal prefix.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_ENTRY = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?[0-9]))?")
_IPV6_ENTRY = re.compile(r"[0-9a-f.:]*:[0-9a-f.:]*(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?")
_ASCII_SPACE = " \t\n\r\f\v"
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HOST_CHARS = re.compile(r"[a-z0-9._-]+")
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
_OCTAL = re.compile(r"0[0-7]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Allowlist:
    """Networks and hostname patterns webhooks may be sent to.

    A host pattern is an exact name (``hooks.example.com``) or ``*.`` followed
    by a name, which matches any subdomain at any depth but not the name itself.
    """

    networks: tuple[IPNetwork, ...]
    hosts: tuple[str, ...]
    #: Networks refused even when an entry covers them, each with the reason shown.
    blocked: tuple[tuple[IPNetwork, str], ...]

    @classmethod
    def parse(cls, entries: Iterable[str], blocked: Iterable[tuple[str, str]]) -> Allowlist:
        """Build an allowlist from IPs, CIDR networks and hostname patterns, and the
        (network, reason) pairs of pgmsg_blocked_networks."""
        if isinstance(entries, str):
            # Iterating a string would yield one-character "entries".
            raise InvalidInput("allowlist entries must be a list of strings, not one string")
        networks: list[IPNetwork] = []
        hosts: list[str] = []
        for entry in entries:
            network = _parse_network(entry)
            if network is not None:
                networks.append(network)
            else:
                hosts.append(_parse_host_pattern(entry))
        refused = tuple((ipaddress.ip_network(str(network)), str(reason)) for network, reason in blocked)
        if not refused:
            # Never a silent "nothing is blocked": the list comes from the database, which always has it.
            raise InvalidInput(
                "no blocked networks given: read them from pgmsg_blocked_networks (migration 028)"
            )
        return cls(tuple(networks), tuple(hosts), refused)

    def network_for(self, ip: IPAddress) -> IPNetwork | None:
        """The first allowlisted network containing ``ip``, if any."""
        return next((net for net in self.networks if ip in net), None)

    def matches_host(self, host: str) -> bool:
        """Whether the hostname ``host`` matches one of the host patterns."""
        name = host.lower().removesuffix(".")
        for pattern in self.hosts:
            if pattern.startswith("*."):
                if name.endswith(pattern[1:]):
                    return True
            elif name == pattern:
                return True
        return False

    def describe(self) -> str:
        """The entries as one line, for error messages."""
        entries = [str(net) for net in self.networks] + list(self.hosts)
        return ", ".join(entries) if entries else "the allowlist is empty"


def _entry_error(entry: object, why: str) -> InvalidInput:
    return InvalidInput(
        f"invalid allowlist entry {entry!r}: {why}; expected an IP address, a CIDR network "
        "such as 10.0.0.0/8, or a hostname pattern such as hooks.example.com or *.internal.example"
    )


def _entry_text(entry: object) -> str:
    """The entry trimmed of ASCII whitespace and lower-cased, as the database reads it."""
    if not isinstance(entry, str) or not entry.strip(_ASCII_SPACE):
        raise _entry_error(entry, "empty or not a string")
    text = entry.strip(_ASCII_SPACE).lower()
    if not _PRINTABLE_ASCII.fullmatch(text):
        # The database refuses these too; internationalised names go in their xn-- form.
        raise _entry_error(entry, "spaces, control or non-ASCII characters (write names in their xn-- form)")
    return text


def _parse_network(entry: object) -> IPNetwork | None:
    """The entry as a network, None if it is not IP-shaped, InvalidInput if malformed."""
    text = _entry_text(entry)
    if not (_IPV4_ENTRY.fullmatch(text) or _IPV6_ENTRY.fullmatch(text)):
        # Short and numeric spellings (10/8, 127.1, 0x7f.1) and netmask forms are refused,
        # as pgmsg_set_webhook_allowlist refuses them, rather than guessed.
        if "/" in text or ":" in text or _ends_in_number(text):
            raise _entry_error(entry, "not an IP address or CIDR network in canonical form")
        return None
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise _entry_error(entry, str(exc)) from exc
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        # Targets are checked in their IPv4 form, so this entry would never match.
        raise _entry_error(entry, "IPv4-mapped IPv6 network; write the IPv4 form")
    return network


def _parse_host_pattern(entry: str) -> str:
    text = _entry_text(entry).removesuffix(".")
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    if "*" in name:
        raise _entry_error(entry, "only a leading '*.' wildcard is supported")
    try:
        name = _to_ascii(name)
    except InvalidInput as exc:
        raise _entry_error(entry, str(exc)) from exc
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _entry_error(entry, "not a valid hostname")
    return f"*.{name}" if wildcard else name


def _to_ascii(host: str) -> str:
    """Lowercase ASCII form of a host; IDNA maps look-alikes such as fullwidth digits."""
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InvalidInput(f"host {host!r} is not a valid internationalised name ({exc})") from exc


def _split(url: str) -> tuple[str, int]:
    """Host (ASCII, no brackets) and port of an http(s) URL, or an error saying why not."""
    if not isinstance(url, str) or any(ch <= " " or ch == "\x7f" for ch in url):
        raise InvalidInput(f"webhook URL {url!r} is empty or contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"webhook URL {url!r} is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BlockedTarget(
            f"webhook target {url!r} refused: scheme {scheme or '(none)'!r} is not http or https"
        )
    if "@" in parts.netloc:
        # Credentials in the URL leak, and parsers disagree on where userinfo ends.
        raise BlockedTarget(f"webhook target {url!r} refused: URLs with user:password@ are not allowed")
    host = parts.hostname or ""
    if not host:
        raise InvalidInput(f"webhook URL {url!r} has no host")
    if ":" not in host:
        host = _to_ascii(host)
        if not _HOST_CHARS.fullmatch(host):
            raise InvalidInput(f"webhook URL {url!r} has an invalid host {host!r}")
    return host, port if port is not None else (443 if scheme == "https" else 80)


def parse_host(url: str) -> str:
    """The host of an http or https URL: lowercase ASCII, IPv6 without brackets.

    Raises BlockedTarget for other schemes and for URLs with userinfo, and
    InvalidInput for malformed URLs and empty hosts.
    """
    return _split(url)[0]


def _dotted_labels(host: str) -> list[str]:
    """The dot-separated labels, ignoring one trailing dot (which resolvers accept)."""
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    return labels


def _ends_in_number(host: str) -> bool:
    # The WHATWG URL rule: such hosts are IPv4 addresses or invalid, never names.
    return bool(_NUMBER.fullmatch(_dotted_labels(host)[-1]))


def _number(label: str, host: str) -> int:
    # Regexes, not int() alone, which would also take signs, spaces and underscores.
    if _HEX.fullmatch(label):
        return int(label[2:] or "0", 16)
    if _OCTAL.fullmatch(label):
        return int(label, 8)
    if _DECIMAL.fullmatch(label):
        return int(label)
    raise InvalidInput(f"host {host!r} looks like an IPv4 address but is malformed")


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """IPv4 in every inet_aton / WHATWG spelling: 127.1, 0x7f.0.0.1, 0177.0.0.1, 2130706433."""
    if not _ends_in_number(host):
        return None
    labels = _dotted_labels(host)
    if len(labels) > 4:
        raise InvalidInput(f"host {host!r} looks like an IPv4 address but has too many parts")
    *head, last = [_number(label, host) for label in labels]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise InvalidInput(f"host {host!r} looks like an IPv4 address but a part is out of range")
    value = last
    for index, part in enumerate(head):
        value += part << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _unmap(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 addresses are the IPv4 address they carry."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalise_ip(host: str) -> IPAddress | None:
    """The address an IP-literal host denotes, or None for a hostname.

    Accepts brackets, IPv6 zone ids and every IPv4 spelling libcurl and browsers
    accept; IPv4-mapped IPv6 gives the IPv4 address. A host that looks numeric
    but is not a valid address raises InvalidInput rather than being resolved.
    """
    text = host.strip()
    bracketed = text.startswith("[") and text.endswith("]")
    if bracketed:
        text = text[1:-1]
    if bracketed or ":" in text:
        try:
            ip = ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError as exc:
            raise InvalidInput(f"host {host!r} is not a valid IPv6 address ({exc})") from exc
        return _unmap(ip)
    return _parse_ipv4(_to_ascii(text))


def _blocked_reason(ip: IPAddress, blocked: tuple[tuple[IPNetwork, str], ...]) -> str | None:
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in candidates:
        for network, why in blocked:
            if candidate in network:
                return why
    return None


def _label(ip: IPAddress, target: str | None) -> str:
    return str(ip) if target is None or target == str(ip) else f"{target} ({ip})"


def _refuse_always_blocked(ip: IPAddress, target: str | None, allowlist: Allowlist) -> None:
    reason = _blocked_reason(ip, allowlist.blocked)
    if reason is not None:
        raise BlockedTarget(f"webhook target {_label(ip, target)} refused: {reason}")


def check_address(ip: IPAddress, allowlist: Allowlist, *, target: str | None = None) -> None:
    """Raise BlockedTarget unless ``ip`` is allowlisted and not always blocked.

    ``target`` is the host as written, shown in the message when it differs.
    """
    ip = _unmap(ip)
    _refuse_always_blocked(ip, target, allowlist)
    if allowlist.network_for(ip) is None:
        raise BlockedTarget(
            f"webhook target {_label(ip, target)} refused: not in the allowlist ({allowlist.describe()})"
        )


def _getaddrinfo(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]


def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        answers = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise BlockedTarget(f"webhook target {host} refused: does not resolve ({exc})") from exc
    if not answers:
        raise BlockedTarget(f"webhook target {host} refused: does not resolve")
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            ip = _unmap(ipaddress.ip_address(str(answer).split("%", 1)[0]))
        except ValueError as exc:
            raise BlockedTarget(
                f"webhook target {host} refused: resolver returned {answer!r}, which is not an IP address"
            ) from exc
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def check_url(url: str, allowlist: Allowlist, *, resolve: Resolver | None = None) -> list[str]:
    """Check a webhook URL right before sending; return the addresses checked.

    An IP-literal host must be in an allowlisted network. A hostname must match
    a host pattern or have every address it resolves to in an allowlisted
    network. Every address must also be outside the allowlist's blocked networks. ``resolve(host,
    port)`` returns IP strings and defaults to socket.getaddrinfo.
    """
    host, port = _split(url)
    ip = normalise_ip(host)
    if ip is not None:
        check_address(ip, allowlist, target=host)
        return [str(ip)]
    addresses = _resolve(host, port, resolve or _getaddrinfo)
    by_pattern = allowlist.matches_host(host)
    for address in addresses:
        if by_pattern:
            _refuse_always_blocked(address, host, allowlist)
        else:
            check_address(address, allowlist, target=host)
    return [str(address) for address in addresses]
