"""The device mesh: one ``'data'`` axis over every device of every host.

Data parallelism in jaxseg is plain SPMD under ``jax.jit``: the global batch is sharded along the
single mesh axis ``'data'`` (``PartitionSpec('data')`` on the batch dimension), parameters, batch
statistics and optimiser state are replicated (``PartitionSpec()``), and XLA inserts the
all-reduces (gradient mean, BatchNorm moments over the global batch). Because every reduction is
over the *global* batch, a step gives the same result whatever the number of devices.

Multi-host: every process runs the same program; ``jax.distributed.initialize()`` joins them
(called by :func:`initialize_distributed` when the config asks for it), each host's input
pipeline yields its own share of the global batch (``global_batch_size // process_count``
examples) and :func:`global_batch` assembles the global ``jax.Array`` from those host-local NumPy
arrays with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

_initialized = False


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           local_device_ids: Optional[Sequence[int]] = None) -> None:
  """Joins this process to a multi-host run with ``jax.distributed.initialize``.

  With no arguments JAX discovers the cluster itself (Cloud TPU, SLURM, Open MPI, Kubernetes
  environments); pass ``coordinator_address="host:port"``, ``num_processes`` and ``process_id``
  to join processes by hand (e.g. several processes on one machine). Must be called before any
  other JAX call that touches devices. Calling it twice in one process is a no-op.
  """
  global _initialized
  if _initialized:
    return
  kwargs: dict[str, Any] = {}
  if coordinator_address:
    kwargs["coordinator_address"] = coordinator_address
  if num_processes is not None and num_processes >= 0:
    kwargs["num_processes"] = int(num_processes)
  if process_id is not None and process_id >= 0:
    kwargs["process_id"] = int(process_id)
  if local_device_ids:
    kwargs["local_device_ids"] = list(local_device_ids)
  # Cross-process collectives between CPU devices need an explicit implementation (harmless for
  # accelerator backends, whose collectives do not go through it).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  _initialized = True


def create_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named ``'data'`` over ``devices`` (default: all devices of all processes).

  The axis type is ``Auto`` (classic GSPMD propagation): shardings are given explicitly at the
  ``jit`` boundary and XLA chooses the layout of intermediates.
  """
  if devices is None:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))
  devices = list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of parameters and optimiser state: a full copy on every device."""
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: the leading (batch) dimension split along ``'data'``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch_size(global_batch_size: int, mesh: Mesh, *,
                            field: str = "batch_size") -> int:
  """Returns the per-process batch size, or raises ValueError if the global batch does not split
  evenly over the devices of ``mesh``; ``field`` names the setting in the message (the trainer
  passes ``"config.batch_size"`` / ``"config.eval_batch_size"``)."""
  n_dev = mesh.size
  n_proc = jax.process_count()
  if global_batch_size <= 0:
    raise ValueError(f"{field} must be positive, got {global_batch_size}.")
  if global_batch_size % n_dev:
    lower = global_batch_size // n_dev * n_dev
    fits = f"{lower} or {lower + n_dev}" if lower else f"{n_dev}"
    raise ValueError(
        f"{field}={global_batch_size} does not divide over the {n_dev} devices of the mesh: "
        f"the global batch must be a multiple of {n_dev} (e.g. {fits}).")
  return global_batch_size // n_proc


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global batch (sharded along ``'data'``) from this host's NumPy share.

  Each host passes the examples of its own slice of the global batch (as yielded by
  ``jaxseg.data.create_train_iterator(..., process_index, process_count)``); the global leading
  dimension is the local one times ``jax.process_count()``.
  """
  sharding = data_sharded(mesh)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    if value.dtype.kind in ("U", "S", "O"):
      continue  # strings (example ids) stay on the host
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out
