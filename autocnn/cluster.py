"""Connecting to a Ray cluster (or starting a local Ray for the run), failing fast with one line.

Shared by the searches' Ray Tune backend (`autocnn.search.ray`) and data-parallel supernet training on
Ray Train (`autocnn.supernet.distributed`)."""
from __future__ import annotations

import os
import socket
from typing import Any

import ray

from autocnn.errors import AutocnnError, first_line


class ClusterError(AutocnnError):
    """The Ray cluster named by --address cannot be reached or started."""


def check_reachable(address: str | None) -> None:
    """Fail at once when --address HOST:PORT has nothing listening (ray.init retries for minutes)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # another form of address: ray.init judges it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as err:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); start it with "
                          "'ray start --head' or fix --address") from None


def connect(address: str | None, *, log_to_driver: bool = False) -> bool:
    """Connect to `address` or start a local Ray; True when this call started/connected Ray.

    `log_to_driver`: show the workers' output here (a search's trials report through the study instead)."""
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith("AUTOCNN_")}
    kwargs: dict[str, Any] = dict(log_to_driver=log_to_driver, logging_level="WARNING",
                                  runtime_env={"env_vars": env} if env else None)
    try:
        if address and address != "local":
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        reason = first_line(err, 200)
        raise ClusterError(f"cannot start or reach {where} ({reason}); check --address and 'ray status'") from None
    return True
