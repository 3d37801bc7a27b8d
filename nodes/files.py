"""Noise-map files in ComfyUI's folders: numbered saves to the output folder, loads from the input folder.

No path may leave those folders: names are resolved and checked against the folder's real path.
Names are relative to the folder and always use '/', on Windows too, so a workflow that names a file
works on every system; a name with '\\' (a workflow saved by an older version on Windows) is read as '/'.
"""

from __future__ import annotations

import hashlib
import json
import os

import folder_paths
from comfy.cli_args import args

from . import serialization
from .noise_maps import NoiseMaps
from .validation import EditFriendlyInputError

SUFFIX = ".safetensors"
SUBFOLDER = "noise_maps"


def portable_name(name: str) -> str:
    """`name` with '/' as its only separator: how files are listed, returned and resolved everywhere."""
    return name.replace("\\", "/")


def _inside(folder: str, path: str) -> bool:
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    try:
        return os.path.commonpath((folder, path)) == folder
    except ValueError:  # on Windows, a link to another drive
        return False


def workflow_metadata(prompt, extra_pnginfo) -> dict[str, str] | None:
    """The prompt and workflow to store in a saved file, as ComfyUI's SaveLatent stores them (JSON strings under
    "prompt" and each extra_pnginfo key); None when ComfyUI runs with --disable-metadata."""
    if args.disable_metadata:
        return None
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for key in extra_pnginfo or {}:
        metadata[key] = json.dumps(extra_pnginfo[key])
    return metadata


def save_to_output(noise_maps: NoiseMaps, filename_prefix: str, extra_metadata: dict[str, str] | None = None) -> str:
    """Save to a new numbered file under the output folder; returns its path relative to that folder."""
    output_dir = folder_paths.get_output_directory()
    filename_prefix = portable_name(filename_prefix)  # "noise_maps\\ef" from Windows names the same folder everywhere
    file_name = os.path.basename(os.path.normpath(filename_prefix)) if filename_prefix.strip() else ""
    if not file_name or file_name.startswith("."):
        raise EditFriendlyInputError(f"filename_prefix {filename_prefix!r} needs a file name that does not start with '.', such as noise_maps/ef.")
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
            serialization.save(noise_maps, path, extra_metadata)
        except FileExistsError:
            counter += 1
            continue
        return portable_name(os.path.relpath(path, output_dir))


def input_files() -> list[str]:
    """Noise-map files offered by the load node: *.safetensors in the input folder and its noise_maps/ subfolder."""
    input_dir = folder_paths.get_input_directory()
    found = []
    for sub in ("", SUBFOLDER):
        folder = os.path.join(input_dir, sub)
        if os.path.isdir(folder):
            found += [f"{sub}/{f}" if sub else f for f in os.listdir(folder) if f.endswith(SUFFIX) and not f.startswith(".")]
    return sorted(name for name in found if input_file_problem(name) is None)  # only files that can be opened


def _resolve(name: str) -> str:
    input_dir = folder_paths.get_input_directory()
    name = portable_name(name)
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
    """A hash of the file's bytes, so ComfyUI reloads a changed file even when its size and time stayed."""
    digest = hashlib.sha256()
    try:
        with open(_resolve(name), "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except (OSError, EditFriendlyInputError):
        return name
    return f"{name}:{digest.hexdigest()}"
