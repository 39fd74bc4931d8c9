"""Opt-in security: TLS on every broker endpoint, bearer tokens mapped to tenants, topic ACLs.

A cluster whose brokers run without ``--tls-cert`` and ``--auth`` behaves as before.
"""
