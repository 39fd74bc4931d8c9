"""The ZooKeeper metadata layer: brokers, topics, partition state, groups, assignment.

Layout under the cluster chroot ``/talos/<cluster>`` is in :mod:`talos.coord.paths`;
decisions without I/O live in :mod:`talos.coord.assignment` and
:mod:`talos.coord.partition_state`.
"""
