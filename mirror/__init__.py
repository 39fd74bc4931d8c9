"""Cross-datacenter mirror workers (see DESIGN.md section 6)."""
