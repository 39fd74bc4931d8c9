"""Topology files: datacenters, links and topics (see DESIGN.md section 7)."""
