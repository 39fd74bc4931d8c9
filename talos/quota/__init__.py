"""Per-tenant and per-topic produce/consume quotas (issue 13 §2).

``model`` holds the typed values, ``bucket`` the token bucket, ``approval`` the
auto-approval decision, ``store`` their ZooKeeper home, ``enforcer`` the
broker's admission checks and traffic meter, ``runtime`` the broker's watch and
reporter threads.
"""
