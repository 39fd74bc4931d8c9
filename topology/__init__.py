"""Topology files: datacenters, links and topics (see DESIGN.md section 7).

Load one with :func:`load_topology`; every other part takes the returned
:class:`Topology`, never raw TOML.
"""

from topology.loader import dump_topology, load_topology, loads_topology
from topology.model import (
    Datacenter,
    FrozenMap,
    HostSpec,
    Link,
    StoreSpec,
    TopicSpec,
    Topology,
    TopologyError,
    parse_address,
    validate_selector,
)

__all__ = [
    "Datacenter",
    "FrozenMap",
    "HostSpec",
    "Link",
    "StoreSpec",
    "TopicSpec",
    "Topology",
    "TopologyError",
    "dump_topology",
    "load_topology",
    "loads_topology",
    "parse_address",
    "validate_selector",
]
