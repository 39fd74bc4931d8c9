"""The Talos chaos suite: hosts in network namespaces, a seeded nemesis, a history checker.

See chaos/README.md; run with ``make chaos-smoke`` or ``make chaos ARGS=...``.
"""
