"""Several backupmx nodes behind one published address, sharing one Redis.

Each node keeps its own queue, as every MTA does; what the nodes share is what a
client would otherwise play off against them.  The verify cache and the greylist
store take a ``redis://`` URL of their own (backupmx/verify, backupmx/policy);
``cluster_store`` names the Redis where the per-client connection counts and rates
are counted across the nodes (:mod:`.counts`) and where each node publishes its
health and queue summary for ``backupmx status --cluster`` (:mod:`.registry`).
"""

#: the parameter that turns the cluster on
PARAM = "cluster_store"
