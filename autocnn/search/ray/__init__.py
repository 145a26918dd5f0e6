"""The Ray Tune backend: many candidates in parallel on every GPU of a machine or a cluster, same studies.

The driver process (`autocnn.search.driver` with a `RayBackend`) runs one Tune experiment per round,
whose searcher is Ray's `OptunaSearch` bound to the study's own storage and name, so the study is the
one `autocnn studies`, `best`, `export` and the dashboard read, and either backend can continue it.

- `searcher`: the driver side of a trial: samples and records the genotype on the Optuna trial, writes
  what workers report, tells the final state (a trial a scheduler stopped is PRUNED, as locally).
- `worker`: the Tune trainable: prices and trains with the engine's steps on the GPU Ray assigned,
  reports every epoch with a checkpoint (the trainer's `TrainState`), so a worker that dies is retried
  from its last epoch and HyperBand/PBT can pause and resume trials. Only the driver writes to the
  storage: workers need neither database drivers nor credentials.
- `schedulers` (`--scheduler`, and `--pruner`'s mapping onto them), `pbt` (hyperparameters only),
  `callbacks` (heartbeats: ask/tell runs none), `options`, `cluster`, and `internals`, the one module on
  Ray's private API (`OptunaSearch`'s attributes, PBT's exploit hooks).

Resume: the Tune experiment in flight is recorded on the study (`keys.EXPERIMENT_ATTR`); `--resume`
restores it with `Tuner.restore` when its directory is there, then the driver runs new rounds until
the (possibly raised) budget is met. Ctrl-C: Tune saves the experiment and returns; the backend raises
KeyboardInterrupt and keeps the experiment recorded for --resume.
"""
try:
    import ray  # noqa: F401
    from ray import tune  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra installed
    from autocnn.search.config import ConfigError

    raise ConfigError(f"--backend ray needs Ray Tune ({err.name} is missing); "
                      "install it with: pip install 'autocnn[ray]'") from None

from autocnn.search.ray.backend import RayBackend  # noqa: E402
from autocnn.search.ray.schedulers import PRUNER_SCHEDULERS, SCHEDULERS  # noqa: E402

__all__ = ["PRUNER_SCHEDULERS", "SCHEDULERS", "RayBackend"]
