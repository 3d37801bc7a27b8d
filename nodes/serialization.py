"""Noise maps on disk: safetensors files (never pickle) with a format version and the maps' metadata.

Pure torch + safetensors. The loader reads and checks the header itself, with hard limits, before any
tensor is allocated, so a corrupt, truncated or hostile file is refused with a clear message instead
of crashing or stalling the host.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct

import safetensors.torch
import torch

from .noise_maps import SAMPLING_RULES, ModelFingerprint, NoiseMaps
from .validation import EditFriendlyInputError

FORMAT_NAME = "edit-friendly-ddpm/noise-maps"
FORMAT_VERSION = 3
"""Version 2 added the optional tensor `source_denoised` (rule dpmpp_2m_sde); version 3 video latents (maps of 6
dimensions) and lean maps (float16, with a float32 `residual`). Each file is written with the lowest version that
holds it, so older versions of the pack keep reading what they can and refuse the rest as newer."""
MAX_HEADER_BYTES = 1 << 20
"""The maps' own header is a few KiB; the rest is room for the prompt and workflow saved with them (every version of
the pack reads headers up to this size, so a larger workflow is left out rather than make the file unreadable to them)."""
MAX_FILE_BYTES = 16 << 30
"""Far above any real set of maps (Flux at 2048 px, 1000 steps, is about 8 GiB); anything larger is not ours."""

_TENSORS = ("sigmas", "scales", "noisy_latents", "maps", "source_latent")
_OPTIONAL_TENSORS = ("source_denoised", "residual")
"""Present exactly when the step rule needs it (source_denoised), and when the maps are lean (residual)."""
_STORAGE_NAMES = ("F32", "F16")  # the safetensors dtypes of NoiseMaps.STORAGE_DTYPES
_ITEM_BYTES = {"F16": 2, "F32": 4, "F64": 8}


def _layout(storage: str, map_dims: int) -> dict[str, tuple[str, int]]:
    """Each tensor's (safetensors dtype, number of dims) for maps kept in `storage` with `map_dims` dims (5 for image
    latents, 6 for video)."""
    return {
        "sigmas": ("F32", 1),
        "scales": ("F64", 2),
        "noisy_latents": (storage, map_dims),
        "maps": (storage, map_dims),
        "source_latent": ("F32", map_dims - 1),
        "source_denoised": (storage, map_dims),
        "residual": ("F32", map_dims - 1),
    }


class NoiseMapsFileError(EditFriendlyInputError):
    """A noise-maps file that cannot be used; the message says why."""


_FINGERPRINT_FIELDS = ("prediction", "schedule", "latent_format", "latent_channels")
"""The fingerprint fields stored under "fingerprint", which every version reads; later fields get keys of their own."""
_READER_KEYS = (
    "format", "format_version", "eta", "seed", "source_cfg", "rule", "variations", "fingerprint",
    "latent_rgb_factors", "latent_rgb_bias", "batches", "conditioning_digest", "timesteps_digest",
)
"""Metadata keys the loader reads: no saved workflow may take one, even where these maps leave it out."""


def to_bytes(maps: NoiseMaps, extra_metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors encoding of `maps`, metadata included.

    `extra_metadata` (string keys and values, such as the prompt and workflow) is stored beside the maps'
    own keys, which it never replaces; the loader ignores it. If it would make the header larger than the
    loader accepts, the file is written without it.
    """
    tensors = {name: getattr(maps, name).detach().cpu().contiguous() for name in (*_TENSORS, *_OPTIONAL_TENSORS) if getattr(maps, name) is not None}
    tensors["sigmas"] = tensors["sigmas"].float()
    tensors["scales"] = tensors["scales"].double()
    if "source_denoised" in tensors:
        tensors["source_denoised"] = tensors["source_denoised"].to(maps.maps.dtype)
    version = 3 if maps.residual is not None or maps.frames is not None else 2 if maps.source_denoised is not None else 1
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(version),
        "eta": repr(float(maps.eta)),
        "seed": str(int(maps.seed)),
        "source_cfg": repr(float(maps.source_cfg)),
        "rule": maps.rule,
        "variations": str(int(maps.variations)),
        "fingerprint": json.dumps({name: getattr(maps.fingerprint, name) for name in _FINGERPRINT_FIELDS}),
        "latent_rgb_factors": json.dumps(maps.latent_rgb_factors),
        "latent_rgb_bias": json.dumps(maps.latent_rgb_bias),
    }
    if maps.fingerprint.timesteps:
        metadata["timesteps_digest"] = maps.fingerprint.timesteps  # an older pack ignores it
    if maps.batches is not None:
        # Optional keys: an older pack ignores them and replays one step at a time.
        metadata["batches"] = json.dumps([list(batch) for batch in maps.batches])
        metadata["conditioning_digest"] = maps.conditioning_digest or ""
    if extra_metadata:
        extra = {str(key): str(value) for key, value in extra_metadata.items() if key not in _READER_KEYS}
        data = safetensors.torch.save(tensors, metadata={**extra, **metadata})
        if struct.unpack("<Q", data[:8])[0] <= MAX_HEADER_BYTES:
            return data
        logging.getLogger(__name__).warning(
            "Noise maps saved without their prompt and workflow: with them the file's header would exceed %d MiB.", MAX_HEADER_BYTES >> 20
        )
    return safetensors.torch.save(tensors, metadata=metadata)


def save(maps: NoiseMaps, path: str, extra_metadata: dict[str, str] | None = None) -> None:
    """Write `maps` to a new file at `path`; raises FileExistsError rather than overwrite anything."""
    data = to_bytes(maps, extra_metadata)
    with open(path, "xb") as handle:  # exclusive create: an existing file is never replaced
        try:
            handle.write(data)
        except BaseException:
            handle.close()
            os.remove(path)
            raise


def _refuse(path: str, reason: str) -> NoiseMapsFileError:
    return NoiseMapsFileError(f"Cannot load noise maps from {os.path.basename(path)}: {reason}")


def _read_header(path: str) -> tuple[dict, int]:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise _refuse(path, f"the file is {size / 2**30:.1f} GiB, more than any noise maps can be.")
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _refuse(path, "the file is truncated (no safetensors header).")
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > MAX_HEADER_BYTES or header_bytes > size - 8:
            raise _refuse(path, "the header length is impossible: the file is corrupt or not a safetensors file.")
        raw = handle.read(header_bytes)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _refuse(path, "the header is not valid JSON: the file is corrupt.") from None
    if not isinstance(header, dict):
        raise _refuse(path, "the header is not a safetensors header.")
    return header, size - 8 - header_bytes


def _check_layout(path: str, header: dict, data_bytes: int) -> dict:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise _refuse(path, "it is not an edit-friendly noise-maps file (no format marker).")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise _refuse(path, "its format version is unreadable.") from None
    if version > FORMAT_VERSION:
        raise _refuse(path, f"it was written in format {version}, newer than this pack reads ({FORMAT_VERSION}); update the pack.")
    if version < 1:
        raise _refuse(path, f"format version {version} does not exist.")
    extra = set(header) - set(_TENSORS) - set(_OPTIONAL_TENSORS) - {"__metadata__"}
    if extra:
        raise _refuse(path, f"it holds unexpected tensors {sorted(extra)}.")
    maps_entry = header.get("maps")
    if not isinstance(maps_entry, dict) or maps_entry.get("dtype") not in _STORAGE_NAMES:
        raise _refuse(path, f"the tensor 'maps' is missing or has a dtype other than {', '.join(_STORAGE_NAMES)}.")
    map_dims = len(maps_entry.get("shape") or ())
    if map_dims not in (5, 6):
        raise _refuse(path, f"the tensor 'maps' has an impossible shape {maps_entry.get('shape')}.")
    if ("residual" in header) != (maps_entry["dtype"] != "F32"):
        raise _refuse(path, "lean (float16) maps need their float32 residual, and float32 maps have none.")
    full_layout = _layout(maps_entry["dtype"], map_dims)
    layout = {name: full_layout[name] for name in (*_TENSORS, *(n for n in _OPTIONAL_TENSORS if n in header))}
    spans = []
    for name, (dtype, ndim) in layout.items():
        entry = header.get(name)
        if not isinstance(entry, dict):
            raise _refuse(path, f"the tensor '{name}' is missing.")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if entry.get("dtype") != dtype:
            raise _refuse(path, f"the tensor '{name}' has dtype {entry.get('dtype')}, expected {dtype}.")
        if not (isinstance(shape, list) and len(shape) == ndim and all(isinstance(d, int) and 0 < d < 2**31 for d in shape)):
            raise _refuse(path, f"the tensor '{name}' has an impossible shape {shape}.")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _refuse(path, f"the tensor '{name}' has unreadable offsets.")
        begin, end = offsets
        if not (0 <= begin <= end <= data_bytes) or end - begin != math.prod(shape) * _ITEM_BYTES[dtype]:
            raise _refuse(path, f"the tensor '{name}' does not fit the file: it is truncated or corrupt.")
        spans.append((begin, end))
    spans.sort()
    if any(previous_end > begin for (_, previous_end), (begin, _) in zip(spans, spans[1:])):
        raise _refuse(path, "tensors overlap: the file is corrupt.")
    shapes = {name: header[name]["shape"] for name in _TENSORS}
    steps = shapes["maps"][0]
    if (
        shapes["noisy_latents"] != shapes["maps"]
        or shapes["sigmas"] != [steps + 1]
        or shapes["scales"] != [steps + 1, 2]
        or shapes["source_latent"] != shapes["maps"][1:]
        or ("source_denoised" in header and header["source_denoised"]["shape"] != shapes["maps"])
        or ("residual" in header and header["residual"]["shape"] != shapes["maps"][1:])
    ):
        raise _refuse(path, f"its tensor shapes do not fit together: {shapes}.")
    return metadata


def _parse_metadata(path: str, metadata: dict) -> dict:
    try:
        fields = json.loads(metadata["fingerprint"])
        if not isinstance(fields, dict):
            raise TypeError("the fingerprint is not a mapping")
        # A later version may fingerprint more; the fields this one knows still decide what it replays on.
        fingerprint = ModelFingerprint(
            **{name: value for name, value in fields.items() if name in _FINGERPRINT_FIELDS},
            timesteps=str(metadata.get("timesteps_digest", "")),
        )
        values = {
            "eta": float(metadata["eta"]),
            "seed": int(metadata["seed"]),
            "source_cfg": float(metadata["source_cfg"]),
            "rule": metadata["rule"],
            "variations": int(metadata.get("variations", "1")),
            "fingerprint": fingerprint,
            "latent_rgb_factors": _tuple_tree(json.loads(metadata["latent_rgb_factors"])),
            "latent_rgb_bias": _tuple_tree(json.loads(metadata["latent_rgb_bias"])),
        }
        if "batches" in metadata:
            values["batches"] = tuple((int(start), int(stop)) for start, stop in json.loads(metadata["batches"]))
            values["conditioning_digest"] = str(metadata.get("conditioning_digest", "")) or None
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise _refuse(path, f"its metadata is incomplete or unreadable ({type(error).__name__}: {error}).") from None
    if not (0.0 < values["eta"] <= 1.0) or not math.isfinite(values["source_cfg"]):
        raise _refuse(path, "its eta or CFG is out of range.")
    if values["rule"] not in SAMPLING_RULES:
        raise _refuse(path, f"it uses the step rule {values['rule']!r}, which this version does not know; update the pack.")
    return values


def _check_channels(path: str, values: dict, channels: int) -> None:
    """The fingerprint and the preview colours (C rows of RGB, 3 biases) must fit the maps' C channels."""
    if values["fingerprint"].latent_channels != channels:
        raise _refuse(path, f"its fingerprint names {values['fingerprint'].latent_channels} latent channels, but its maps have {channels}.")
    factors, bias = values["latent_rgb_factors"], values["latent_rgb_bias"]
    rows_fit = factors is None or (
        isinstance(factors, tuple) and len(factors) == channels and all(_is_rgb(row) for row in factors)
    )
    if not rows_fit or not (bias is None or _is_rgb(bias)):
        raise _refuse(path, f"its preview colours (latent_rgb_factors, latent_rgb_bias) do not fit {channels} latent channels.")


def _is_rgb(value) -> bool:
    return isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, float) for v in value)


def _tuple_tree(value):
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(_tuple_tree(v) for v in value)
    return float(value)


def load(path: str, device="cpu") -> NoiseMaps:
    """Read noise maps written by `save`, checking everything; raises NoiseMapsFileError with the reason."""
    if not os.path.isfile(path):
        raise _refuse(path, "there is no such file.")
    header, data_bytes = _read_header(path)
    metadata = _check_layout(path, header, data_bytes)
    values = _parse_metadata(path, metadata)
    try:
        tensors = safetensors.torch.load_file(path, device="cpu")
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise _refuse(path, f"the data cannot be read ({error}).") from None
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise _refuse(path, f"the tensor '{name}' holds NaN or infinite values.")
    _check_channels(path, values, tensors["maps"].shape[2])
    sigmas = tensors["sigmas"]
    if float(sigmas[-1]) != 0.0 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise _refuse(path, "its schedule does not decrease to 0.")
    try:
        maps = NoiseMaps(**{name: tensor.to(device) for name, tensor in tensors.items()}, **values)
    except ValueError as error:
        raise _refuse(path, str(error)) from None
    return maps
