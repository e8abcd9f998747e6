"""Typed classes for libvirt virtual network XML (https://libvirt.org/formatnetwork.html)."""

from __future__ import annotations

from virtkit.xml.base import Children, XMLObject, attr, int_attr, text


class DhcpRange(XMLObject):
    TAG = "range"
    start = attr("", "start")
    end = attr("", "end")


class DhcpHost(XMLObject):
    """A static DHCP reservation: ``mac`` (IPv4) or ``id``/``name`` -> ``ip``."""

    TAG = "host"
    mac = attr("", "mac")
    name = attr("", "name")
    ip = attr("", "ip")


class IP(XMLObject):
    TAG = "ip"
    family = attr("", "family")  # "ipv4" (default) or "ipv6"
    address = attr("", "address")
    netmask = attr("", "netmask")
    prefix = int_attr("", "prefix")
    dhcp_ranges = Children(DhcpRange, "dhcp/range")
    dhcp_hosts = Children(DhcpHost, "dhcp/host")


class Hostname(XMLObject):
    TAG = "hostname"
    value = text("")


class DnsHost(XMLObject):
    TAG = "host"
    ip = attr("", "ip")
    hostnames = Children(Hostname)


class ForwardInterface(XMLObject):
    TAG = "interface"
    dev = attr("", "dev")


class Network(XMLObject):
    TAG = "network"
    name = text("name")
    uuid = text("uuid")
    forward_mode = attr("forward", "mode")  # nat, route, open, bridge, vepa, private, passthrough
    forward_dev = attr("forward", "dev")
    forward_interfaces = Children(ForwardInterface, "forward/interface")
    bridge_name = attr("bridge", "name")
    bridge_stp = attr("bridge", "stp")
    mac = attr("mac", "address")
    domain_name = attr("domain", "name")
    ips = Children(IP, "ip")
    dns_hosts = Children(DnsHost, "dns/host")
