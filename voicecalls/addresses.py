"""Is an IP address public unicast? The one rule of the SSRF guards: the webhook
transport (when an endpoint is saved and at every connect) and the voice-agent
worker's tool calls (agent/workflow.py).

Standard library only: the agent worker has its own venv and imports this module
without Django.

Python's `is_global` is not enough (3.11 calls 6to4 2002::/16, site-local fec0::/10
and the 6to4 relay 192.88.99.0/24 global), so the special-purpose blocks are listed
here from the IANA registries. IPv6 forms that carry an IPv4 address (IPv4-mapped,
IPv4-compatible, IPv4-translated, 6to4, NAT64, Teredo) are judged by the IPv4
addresses they carry: the packets end up there.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services that sit on otherwise public addresses.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("168.63.129.16"),  # Azure wireserver
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# IANA IPv4 special-purpose registry entries that are not globally reachable, and
# the deprecated 6to4 relay anycast block (RFC 7526).
NON_PUBLIC_V4 = tuple(
    _V4(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
# Public IPv6 unicast is 2000::/3 minus these: IETF protocol assignments (Teredo is
# unwrapped before), documentation, and the local-use NAT64 prefix (RFC 8215; the
# IPv4 address it carries depends on the local translator, so it is never public).
GLOBAL_UNICAST_V6 = _V6("2000::/3")
NON_PUBLIC_V6 = tuple(_V6(n) for n in ("2001::/23", "2001:db8::/32", "3fff::/20"))
NAT64_LOCAL = _V6("64:ff9b:1::/48")

_IPV4_MAPPED = _V6("::ffff:0:0/96")
_IPV4_TRANSLATED = _V6("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
_IPV4_COMPATIBLE = _V6("::/96")  # deprecated (RFC 4291), still routable by some stacks
_NAT64 = _V6("64:ff9b::/96")  # RFC 6052 well-known prefix
_LAST_32_BITS = (_IPV4_MAPPED, _IPV4_TRANSLATED, _IPV4_COMPATIBLE, _NAT64)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 transition form carries, or None if it is none."""
    if any(ip in network for network in _LAST_32_BITS):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:  # (server, client); Python undoes the client's obfuscation
        return list(ip.teredo)
    return None


def _v4_is_public(ip: ipaddress.IPv4Address) -> bool:
    return (
        ip.is_global
        and not ip.is_multicast
        and not any(ip in network for network in NON_PUBLIC_V4)
        and ip not in METADATA_ADDRESSES
    )


def address_is_public(address: str | IPAddress) -> bool:
    """True only for a public unicast address (after unwrapping embedded IPv4).
    A zone index (`fe80::1%eth0`) is ignored; it only ever marks a link-local address."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_is_public(ip)
    if ip in NAT64_LOCAL:
        return False
    carried = embedded_ipv4(ip)
    if carried is not None:
        return all(_v4_is_public(v4) for v4 in carried)
    return (
        ip in GLOBAL_UNICAST_V6
        and ip.is_global
        and not any(ip in network for network in NON_PUBLIC_V6)
        and ip not in METADATA_ADDRESSES
    )
