"""One Ray test cluster per test session, on loopback only: a head node and a second worker node
(`ray.cluster_utils.Cluster`, the pattern of `../shared/notes/ray-on-these-machines.md`). Never `ray stop` (it is
machine-wide); the cluster is shut down by `ray.shutdown` + `Cluster.shutdown` when the session ends.

CPU budget on a 2-core box: head 2 logical CPUs + worker 1; every stage asks for 0.5 CPU per task/actor, so the
read tasks always find a slot (1 CPU per actor deadlocks a 2-CPU cluster)."""

import atexit
import os

_STATE: dict = {}

# set before Ray starts any process (Ray reads some at import)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # every Ray server binds 127.0.0.1 only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")                # loopback only: no token file in $HOME
os.environ.setdefault("RAY_TMPDIR", f"/tmp/crt{os.getuid()}")     # short: unix socket paths <= 107 bytes
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def ray_cluster():
    """(cluster, Engine) joined by this process; started on first use, torn down at exit."""
    if "engine" in _STATE:
        return _STATE["cluster"], _STATE["engine"]
    import ray
    from ray.cluster_utils import Cluster

    from curation.engine import Engine, ensure_ray

    os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)
    store = 100 * 1024**2
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": store, "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=store)
    engine = Engine(kind="ray", address=cluster.address, parallelism=6)
    ensure_ray(engine)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.verbose_progress = False
    try:
        ctx.execution_no_progress_timeout_s = 120   # a hang becomes an error (default: 30 min)
    except AttributeError:  # pragma: no cover
        pass
    _STATE.update(cluster=cluster, engine=engine)
    atexit.register(_shutdown)
    return cluster, engine


def _shutdown():
    import ray

    ray.shutdown()
    cluster = _STATE.pop("cluster", None)
    _STATE.pop("engine", None)
    if cluster is not None:
        cluster.shutdown()
