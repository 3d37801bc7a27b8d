"""Noise-map files in ComfyUI's folders: numbered saves to the output folder, loads from the input folder.

No path may leave those folders: names are resolved and checked against the folder's real path.
"""

from __future__ import annotations

import os

import folder_paths

from . import serialization
from .noise_maps import NoiseMaps
from .validation import EditFriendlyInputError

SUFFIX = ".safetensors"
SUBFOLDER = "noise_maps"


def _inside(folder: str, path: str) -> bool:
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    return os.path.commonpath((folder, path)) == folder


def save_to_output(noise_maps: NoiseMaps, filename_prefix: str) -> str:
    """Save to a new numbered file under the output folder; returns its path relative to that folder."""
    output_dir = folder_paths.get_output_directory()
    try:
        folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
    except Exception as error:  # ComfyUI raises a bare Exception for a prefix that leaves the output folder
        raise EditFriendlyInputError(f"filename_prefix {filename_prefix!r} is not usable: {error}") from None
    if not _inside(output_dir, folder):
        raise EditFriendlyInputError(f"filename_prefix {filename_prefix!r} points outside the output folder.")
    os.makedirs(folder, exist_ok=True)
    while True:
        path = os.path.join(folder, f"{name}_{counter:05}_{SUFFIX}")
        try:
            serialization.save(noise_maps, path)
        except FileExistsError:
            counter += 1
            continue
        return os.path.relpath(path, output_dir)


def input_files() -> list[str]:
    """Noise-map files offered by the load node: *.safetensors in the input folder and its noise_maps/ subfolder."""
    input_dir = folder_paths.get_input_directory()
    found = []
    for sub in ("", SUBFOLDER):
        folder = os.path.join(input_dir, sub)
        if os.path.isdir(folder):
            found += [os.path.join(sub, f) if sub else f for f in os.listdir(folder) if f.endswith(SUFFIX) and os.path.isfile(os.path.join(folder, f))]
    return sorted(found)


def _resolve(name: str) -> str:
    input_dir = folder_paths.get_input_directory()
    path = os.path.join(input_dir, name)
    if os.path.isabs(name) or not _inside(input_dir, path):
        raise EditFriendlyInputError(f"{name!r} is not a file inside the input folder.")
    return path


def input_file_problem(name: str) -> str | None:
    """Why `name` cannot be loaded, or None: for ComfyUI's validation before the prompt runs."""
    try:
        path = _resolve(name)
    except EditFriendlyInputError as error:
        return str(error)
    if not name.endswith(SUFFIX) or not os.path.isfile(path):
        return f"No noise-maps file {name!r} in the input folder."
    return None


def load_from_input(name: str) -> NoiseMaps:
    problem = input_file_problem(name)
    if problem:
        raise EditFriendlyInputError(problem)
    return serialization.load(_resolve(name))


def content_fingerprint(name: str):
    """Changes when the file does, so ComfyUI reloads it instead of reusing a cached result."""
    try:
        stat = os.stat(_resolve(name))
    except (OSError, EditFriendlyInputError):
        return name
    return f"{name}:{stat.st_size}:{stat.st_mtime_ns}"
