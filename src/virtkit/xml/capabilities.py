"""Typed read access to libvirt's host capabilities and domain capabilities XML."""

from __future__ import annotations

from virtkit.xml.base import Children, XMLObject, attr, int_attr, int_text, text


class Pages(XMLObject):
    TAG = "pages"
    size_kib = int_attr("", "size")
    count = int_text("")


class CellCpu(XMLObject):
    """One logical CPU of a NUMA cell: its socket, die, core and SMT siblings (``0,16``)."""

    TAG = "cpu"
    id = int_attr("", "id")
    socket_id = int_attr("", "socket_id")
    die_id = int_attr("", "die_id")
    core_id = int_attr("", "core_id")
    siblings = attr("", "siblings")


class Distance(XMLObject):
    """The NUMA distance from a cell to the cell ``id`` (10 is local)."""

    TAG = "sibling"
    id = int_attr("", "id")
    value = int_attr("", "value")


class Cell(XMLObject):
    TAG = "cell"
    id = int_attr("", "id")
    memory_kib = int_text("memory")
    pages = Children(Pages)
    cpus = int_attr("cpus", "num")
    cpu_list = Children(CellCpu, "cpus/cpu")
    distances = Children(Distance, "distances/sibling")


class CacheBank(XMLObject):
    """A CPU cache (``<host><cache><bank>``): level, size and the CPUs sharing it."""

    TAG = "bank"
    id = int_attr("", "id")
    level = int_attr("", "level")
    type = attr("", "type")
    size = int_attr("", "size")
    unit = attr("", "unit")
    cpus = attr("", "cpus")


class Machine(XMLObject):
    TAG = "machine"
    name = text("")
    canonical = attr("", "canonical")
    max_cpus = int_attr("", "maxCpus")


class GuestDomain(XMLObject):
    TAG = "domain"
    type = attr("", "type")
    emulator = text("emulator")
    machines = Children(Machine)


class GuestArch(XMLObject):
    TAG = "arch"
    name = attr("", "name")
    emulator = text("emulator")
    machines = Children(Machine)
    domains = Children(GuestDomain)


class Guest(XMLObject):
    TAG = "guest"
    os_type = text("os_type")
    arch = Children(GuestArch)


class BaseLabel(XMLObject):
    TAG = "baselabel"
    type = attr("", "type")
    label = text("")


class SecModel(XMLObject):
    TAG = "secmodel"
    model = text("model")
    base_labels = Children(BaseLabel)


class Capabilities(XMLObject):
    TAG = "capabilities"
    host_uuid = text("host/uuid")
    host_arch = text("host/cpu/arch")
    cpu_model = text("host/cpu/model")
    cpu_vendor = text("host/cpu/vendor")
    sockets = int_attr("host/cpu/topology", "sockets")
    cores = int_attr("host/cpu/topology", "cores")
    threads = int_attr("host/cpu/topology", "threads")
    cells = Children(Cell, "host/topology/cells/cell")
    page_sizes = Children(Pages, "host/cpu/pages")  # the page sizes the host CPU offers
    cache_banks = Children(CacheBank, "host/cache/bank")
    guests = Children(Guest)
    secmodels = Children(SecModel, "host/secmodel")

    def dac_label(self, domain_type: str) -> str | None:
        """The ``uid:gid`` libvirt runs QEMU as for this domain type (``+64055:+64055``)."""
        for model in self.secmodels:
            if model.model == "dac":
                for label in model.base_labels:
                    if label.type == domain_type and label.label:
                        return label.label
        return None

    def guest_arch(self, arch: str, os_type: str = "hvm") -> GuestArch | None:
        for guest in self.guests:
            if guest.os_type != os_type:
                continue
            for candidate in guest.arch:
                if candidate.name == arch:
                    return candidate
        return None

    def domain_types(self, arch: str) -> list[str]:
        guest = self.guest_arch(arch)
        return [] if guest is None else [d.type for d in guest.domains if d.type]

    def machine_names(self, arch: str, domain_type: str) -> list[str]:
        """All machine names (aliases such as ``q35`` and canonical names) for one domain type."""
        guest = self.guest_arch(arch)
        if guest is None:
            return []
        machines = list(guest.machines)
        for domain in guest.domains:
            if domain.type == domain_type:
                machines.extend(domain.machines)
        names: list[str] = []
        for machine in machines:
            for name in (machine.name, machine.canonical):
                if name and name not in names:
                    names.append(name)
        return names


class CPUModel(XMLObject):
    TAG = "model"
    name = text("")
    usable = attr("", "usable")


class CPUMode(XMLObject):
    TAG = "mode"
    name = attr("", "name")
    supported = attr("", "supported")
    models = Children(CPUModel)


class DomainCapabilities(XMLObject):
    TAG = "domainCapabilities"
    emulator = text("path")
    domain = text("domain")
    machine = text("machine")
    arch = text("arch")
    max_vcpus = int_attr("vcpu", "max")
    cpu_modes = Children(CPUMode, "cpu/mode")

    def supported_cpu_modes(self) -> list[str]:
        return [m.name for m in self.cpu_modes if m.name and m.supported == "yes"]

    def cpu_models(self) -> list[str]:
        for mode in self.cpu_modes:
            if mode.name == "custom":
                return [m.name for m in mode.models if m.name]
        return []
