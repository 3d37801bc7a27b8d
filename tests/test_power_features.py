"""Save/load of maps, the SamplerCustomAdvanced path, masked edits and batched variations."""

import inspect
import json
import os
import pathlib
import struct
import subprocess
import sys

import comfy.cli_args
import comfy_extras.nodes_custom_sampler as custom_sampler
import folder_paths
import pytest
import safetensors
import tiny_models
import torch
from comfy_api.latest import io
from edit_friendly_ddpm.nodes import files, pipeline, serialization
from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlyLoadNoiseMaps, EditFriendlySamplerCustom, EditFriendlySaveNoiseMaps
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError

TOLERANCE = 1e-4


@pytest.fixture
def comfy_folders(tmp_path):
    """Point ComfyUI's input, output and temp folders at a temporary place for the test."""
    before = folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    for name in ("input", "output", "temp"):
        (tmp_path / name).mkdir()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    yield tmp_path
    folder_paths.set_input_directory(before[0])
    folder_paths.set_output_directory(before[1])
    folder_paths.set_temp_directory(before[2])


@pytest.fixture(scope="module")
def eps():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, batch=1, height=8, width=12, seed=1)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "ddim_uniform", 1.0, 5)
    return tiny, latent, positive, negative, maps


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_regenerates_exactly(eps, comfy_folders):
    tiny, latent, positive, negative, maps = eps
    EditFriendlySaveNoiseMaps.execute(maps, "noise_maps/round")
    saved = sorted((comfy_folders / "output" / "noise_maps").iterdir())
    assert [p.name for p in saved] == ["round_00001_.safetensors"]
    (comfy_folders / "input" / "noise_maps").mkdir()
    saved[0].rename(comfy_folders / "input" / "noise_maps" / saved[0].name)
    assert files.input_files() == ["noise_maps/round_00001_.safetensors"]
    assert EditFriendlyLoadNoiseMaps.validate_inputs("noise_maps/round_00001_.safetensors") is True
    (loaded,) = EditFriendlyLoadNoiseMaps.execute("noise_maps/round_00001_.safetensors").result
    for name in ("sigmas", "scales", "noisy_latents", "maps", "source_latent"):
        assert torch.equal(getattr(loaded, name), getattr(maps, name)), name
    assert (loaded.eta, loaded.seed, loaded.source_cfg, loaded.fingerprint, loaded.latent_rgb_factors) == (
        maps.eta, maps.seed, maps.source_cfg, maps.fingerprint, maps.latent_rgb_factors
    )
    regenerated = pipeline.regenerate(tiny.patcher, positive, negative, loaded, 3.5, 2)
    assert (regenerated - latent["samples"]).abs().max().item() <= TOLERANCE


def test_file_names_use_forward_slashes_and_a_name_saved_on_windows_still_works(eps, comfy_folders):
    # A workflow saved on Windows names its files with backslashes; on every system the pack lists and
    # returns names with '/', and reads a '\\' in a name (or a prefix) as '/'.
    saved = EditFriendlySaveNoiseMaps.execute(eps[4], "noise_maps\\win").ui["text"]
    assert saved == ["noise_maps/win_00001_.safetensors"]
    written = comfy_folders / "output" / "noise_maps" / "win_00001_.safetensors"
    assert list((comfy_folders / "output").rglob("*.safetensors")) == [written]
    (comfy_folders / "input" / "noise_maps").mkdir()
    written.rename(comfy_folders / "input" / "noise_maps" / written.name)
    assert files.input_files() == ["noise_maps/win_00001_.safetensors"]
    windows_name = "noise_maps\\win_00001_.safetensors"
    assert EditFriendlyLoadNoiseMaps.validate_inputs(windows_name) is True
    (loaded,) = EditFriendlyLoadNoiseMaps.execute(windows_name).result
    assert torch.equal(loaded.maps, eps[4].maps)
    assert EditFriendlyLoadNoiseMaps.fingerprint_inputs(windows_name).endswith(
        EditFriendlyLoadNoiseMaps.fingerprint_inputs("noise_maps/win_00001_.safetensors").split(":")[-1]
    )


def saved_metadata(path) -> dict:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def with_hidden_inputs(node_class, hidden):
    """The class clone ComfyUI's executor runs, with `hidden` set; later ComfyUI versions pass the hidden inputs
    inside a dict of V3 data instead of alone."""
    takes_v3_data = "v3_data" in inspect.signature(node_class.PREPARE_CLASS_CLONE).parameters
    return node_class.PREPARE_CLASS_CLONE({"hidden_inputs": hidden} if takes_v3_data else hidden)


def test_saved_file_keeps_the_prompt_and_workflow_unless_metadata_is_disabled(eps, comfy_folders, monkeypatch):
    # As ComfyUI's SaveLatent: JSON strings under "prompt" and each extra_pnginfo key; the loader ignores them.
    prompt = {"7": {"class_type": "EditFriendlySaveNoiseMaps", "inputs": {"filename_prefix": "meta", "noise_maps": ["6", 0]}}}
    workflow = {"nodes": [{"id": 7, "type": "EditFriendlySaveNoiseMaps"}], "links": [], "version": 0.4}
    hidden = {io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: {"workflow": workflow, "format": "not a noise-maps marker"}}
    node = with_hidden_inputs(EditFriendlySaveNoiseMaps, hidden)
    assert {"prompt": ("PROMPT",), "extra_pnginfo": ("EXTRA_PNGINFO",)}.items() <= EditFriendlySaveNoiseMaps.INPUT_TYPES()["hidden"].items()
    (name,) = node.execute(eps[4], "meta").ui["text"]
    metadata = saved_metadata(comfy_folders / "output" / name)
    assert json.loads(metadata["prompt"]) == prompt and json.loads(metadata["workflow"]) == workflow
    assert metadata["format"] == serialization.FORMAT_NAME  # a key of the workflow's never replaces the maps' own
    loaded = serialization.load(str(comfy_folders / "output" / name))
    assert torch.equal(loaded.maps, eps[4].maps) and loaded.seed == eps[4].seed

    monkeypatch.setattr(comfy.cli_args.args, "disable_metadata", True)
    (name,) = node.execute(eps[4], "meta").ui["text"]
    metadata = saved_metadata(comfy_folders / "output" / name)
    assert not {"prompt", "workflow"} & set(metadata) and metadata["format"] == serialization.FORMAT_NAME
    assert torch.equal(serialization.load(str(comfy_folders / "output" / name)).maps, eps[4].maps)


def test_a_workflow_too_large_for_the_header_is_left_out_and_the_file_still_loads(eps, tmp_path):
    huge = {"prompt": "{}", "workflow": json.dumps("x" * serialization.MAX_HEADER_BYTES)}
    path = tmp_path / "huge.safetensors"
    serialization.save(eps[4], str(path), huge)
    assert not {"prompt", "workflow"} & set(saved_metadata(path))
    assert torch.equal(serialization.load(str(path)).maps, eps[4].maps)


def test_saving_never_overwrites_a_file(eps, comfy_folders):
    maps = eps[4]
    folder = comfy_folders / "output"
    (folder / "keep_00002_.safetensors").write_bytes(b"a user's file")
    for _ in range(3):
        EditFriendlySaveNoiseMaps.execute(maps, "keep")
    assert (folder / "keep_00002_.safetensors").read_bytes() == b"a user's file"
    assert len(list(folder.glob("keep_*_.safetensors"))) == 4
    with pytest.raises(FileExistsError):
        serialization.save(maps, str(folder / "keep_00002_.safetensors"))


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/abs/escape", "noise_maps/../../escape", "..\\escape", "noise_maps\\..\\..\\escape"])
def test_save_paths_cannot_leave_the_output_folder(eps, comfy_folders, prefix):
    with pytest.raises(EditFriendlyInputError):
        EditFriendlySaveNoiseMaps.execute(eps[4], prefix)
    assert not (comfy_folders / "escape_00001_.safetensors").exists()


@pytest.mark.parametrize("prefix", ["", "  ", ".", ".hidden", "noise_maps/.hidden", "noise_maps\\.hidden"])
def test_save_needs_a_visible_file_name(eps, comfy_folders, prefix):
    with pytest.raises(EditFriendlyInputError, match="needs a file name"):
        EditFriendlySaveNoiseMaps.execute(eps[4], prefix)
    assert list((comfy_folders / "output").rglob("*")) == []


def test_file_list_offers_only_files_that_can_be_loaded(eps, comfy_folders):
    folder = comfy_folders / "input"
    serialization.save(eps[4], str(folder / "good.safetensors"))
    (folder / "._good.safetensors").write_bytes(b"AppleDouble")  # what macOS leaves on shared drives
    (folder / "outside.safetensors").symlink_to(comfy_folders / "output" / "x.safetensors")
    (comfy_folders / "output" / "x.safetensors").write_bytes(b"0")
    (folder / "inside_link.safetensors").symlink_to(folder / "good.safetensors")
    assert files.input_files() == ["good.safetensors", "inside_link.safetensors"]


def test_a_file_changed_in_place_is_reloaded_even_with_the_same_size_and_time(eps, comfy_folders):
    path = comfy_folders / "input" / "maps.safetensors"
    serialization.save(eps[4], str(path))
    before = EditFriendlyLoadNoiseMaps.fingerprint_inputs("maps.safetensors")
    stat = path.stat()
    other = eps[4].replace(maps=eps[4].maps + 1.0)  # same shapes, so the same size
    path.unlink()
    serialization.save(other, str(path))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or an unpacked archive would
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert EditFriendlyLoadNoiseMaps.fingerprint_inputs("maps.safetensors") != before
    assert EditFriendlyLoadNoiseMaps.fingerprint_inputs("maps.safetensors") == EditFriendlyLoadNoiseMaps.fingerprint_inputs("maps.safetensors")


@pytest.mark.parametrize(
    "name",
    [
        "../output/x.safetensors", "/etc/passwd", "noise_maps/../../x.safetensors", "missing.safetensors",
        "..\\output\\x.safetensors", "\\etc\\passwd", "noise_maps\\..\\..\\output\\x.safetensors",
    ],
)
def test_load_paths_cannot_leave_the_input_folder(comfy_folders, name):
    (comfy_folders / "output" / "x.safetensors").write_bytes(b"0")
    assert isinstance(EditFriendlyLoadNoiseMaps.validate_inputs(name), str)
    with pytest.raises(EditFriendlyInputError):
        EditFriendlyLoadNoiseMaps.execute(name)


def rewrite_header(data: bytes, change) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    change(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length :]


def hostile_variants(good: bytes):
    """Named corruptions of a good file: each must be refused with a NoiseMapsFileError."""
    (length,) = struct.unpack("<Q", good[:8])
    nan_maps = serialization.to_bytes(FUZZ_MAPS.replace(maps=FUZZ_MAPS.maps.clone().fill_(float("nan"))))
    yield "empty", b""
    yield "random bytes", os.urandom(4096)
    yield "truncated header", good[: 8 + length // 2]
    yield "truncated data", good[: len(good) - 100]
    yield "huge header length", struct.pack("<Q", 2**62) + good[8:]
    yield "header longer than file", struct.pack("<Q", len(good)) + good[8:]
    yield "header not json", struct.pack("<Q", 16) + b"{not json at all" + good[24:]
    yield "header is a list", rewrite_header(good, lambda h: h.clear()).replace(b"{}", b"[]", 1)
    yield "deep json", struct.pack("<Q", 200000) + b"[" * 100000 + b"]" * 100000
    yield "newer format", rewrite_header(good, lambda h: h["__metadata__"].update(format_version="99"))
    yield "not our format", rewrite_header(good, lambda h: h["__metadata__"].update(format="something-else"))
    yield "no metadata", rewrite_header(good, lambda h: h.pop("__metadata__"))
    yield "a prompt and workflow but no marker", rewrite_header(good, lambda h: h.update(__metadata__={"prompt": "{}", "workflow": "{}"}))
    yield "metadata missing eta", rewrite_header(good, lambda h: h["__metadata__"].pop("eta"))
    yield "eta out of range", rewrite_header(good, lambda h: h["__metadata__"].update(eta="7"))
    yield "unknown rule", rewrite_header(good, lambda h: h["__metadata__"].update(rule="mystery"))
    yield "bad fingerprint", rewrite_header(good, lambda h: h["__metadata__"].update(fingerprint='{"x": 1}'))
    yield "wrong dtype", rewrite_header(good, lambda h: h["maps"].update(dtype="F16"))
    yield "huge shape", rewrite_header(good, lambda h: h["maps"].update(shape=[2**30, 2**30, 1, 1, 1]))
    yield "negative shape", rewrite_header(good, lambda h: h["maps"].update(shape=[-1, 1, 4, 8, 12]))
    yield "shapes disagree", rewrite_header(good, lambda h: h["sigmas"].update(shape=[3], data_offsets=[0, 12]))
    yield "offsets outside file", rewrite_header(good, lambda h: h["maps"].update(data_offsets=[10**12, 10**12 + 1]))
    yield "missing tensor", rewrite_header(good, lambda h: h.pop("scales"))
    yield "extra tensor", rewrite_header(good, lambda h: h.update(extra={"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}))
    yield "NaN values", nan_maps


FUZZ_MAPS = None


def test_loader_refuses_corrupt_and_hostile_files(eps, tmp_path):
    global FUZZ_MAPS
    FUZZ_MAPS = eps[4]
    good = serialization.to_bytes(FUZZ_MAPS)
    for name, data in hostile_variants(good):
        path = tmp_path / "hostile.safetensors"
        path.write_bytes(data)
        with pytest.raises(serialization.NoiseMapsFileError):
            serialization.load(str(path))
        path.unlink()
    (tmp_path / "good.safetensors").write_bytes(good)
    assert torch.equal(serialization.load(str(tmp_path / "good.safetensors")).maps, FUZZ_MAPS.maps)


FUZZ_SCRIPT = r"""
import os, random, sys
sys.path[:0] = sys.argv[1:3]
import conftest
from edit_friendly_ddpm.nodes import serialization
good = open(sys.argv[3], "rb").read()
rng = random.Random(0)
outcomes = {"refused": 0, "loaded": 0}
path = sys.argv[3] + ".fuzz"
for trial in range(300):
    data = bytearray(good)
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.5:  # flip bytes, mostly in the header where the structure is
            at = rng.randrange(0, min(len(data), 8 + 2048) if rng.random() < 0.8 else len(data))
            data[at] = rng.randrange(256)
        elif kind < 0.8:
            data = data[: rng.randrange(len(data))]
        else:
            at = rng.randrange(len(data))
            data[at:at] = os.urandom(rng.randrange(1, 64))
        if not data:
            break
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        serialization.load(path)
        outcomes["loaded"] += 1
    except serialization.NoiseMapsFileError:
        outcomes["refused"] += 1
print(outcomes["refused"], outcomes["loaded"])
"""


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.update(latent_rgb_factors="[[1, 2, 3]]"), "preview colours"),
        (lambda m: m.update(latent_rgb_factors="[[1, 2], [3, 4], [5, 6], [7, 8]]"), "preview colours"),
        (lambda m: m.update(latent_rgb_factors="[1, 2, 3, 4]"), "preview colours"),
        (lambda m: m.update(latent_rgb_bias="[0.1, 0.2]"), "preview colours"),
        (lambda m: m.update(fingerprint=m["fingerprint"].replace('"latent_channels": 4', '"latent_channels": 16')), "16 latent channels"),
    ],
)
def test_loader_refuses_metadata_that_does_not_fit_the_maps(eps, tmp_path, change, words):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(rewrite_header(serialization.to_bytes(eps[4]), lambda h: change(h["__metadata__"])))
    with pytest.raises(serialization.NoiseMapsFileError, match=words):
        serialization.load(str(path))


def test_fingerprints_of_older_and_newer_versions_load(eps, tmp_path):
    maps = eps[4]
    assert maps.fingerprint.timesteps
    path = tmp_path / "current.safetensors"
    serialization.save(maps, str(path))
    stored = json.loads(saved_metadata(path)["fingerprint"])
    # Older versions of the pack build their fingerprint from exactly these fields; the timestep digest has its own key.
    assert sorted(stored) == ["latent_channels", "latent_format", "prediction", "schedule"]

    def older(header):  # saved before the timestep digest existed
        del header["__metadata__"]["timesteps_digest"]

    def newer(header):  # a field a later version may add
        fields = json.loads(header["__metadata__"]["fingerprint"])
        header["__metadata__"]["fingerprint"] = json.dumps(fields | {"weights": "abc123"})

    for name, edit in (("older", older), ("newer", newer)):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(rewrite_header(serialization.to_bytes(maps), edit))
        loaded = serialization.load(str(path))
        assert loaded.fingerprint.mismatch(maps.fingerprint) is None, name
        assert loaded.fingerprint.timesteps == ("" if name == "older" else maps.fingerprint.timesteps)
    path.write_bytes(rewrite_header(serialization.to_bytes(maps), lambda h: h["__metadata__"].update(fingerprint="[1, 2]")))
    with pytest.raises(serialization.NoiseMapsFileError, match="metadata is incomplete or unreadable"):
        serialization.load(str(path))


def test_a_saved_workflow_cannot_take_a_key_the_loader_reads(eps, tmp_path):
    maps = eps[4]  # one step at a time: no batches of its own
    path = tmp_path / "clash.safetensors"
    serialization.save(maps, str(path), {"batches": "[[0, 2], [2, 4]]", "conditioning_digest": "x", "workflow": "{}"})
    metadata = saved_metadata(path)
    assert "batches" not in metadata and "conditioning_digest" not in metadata and metadata["workflow"] == "{}"
    assert serialization.load(str(path)).batches is None


def test_random_corruption_never_crashes_or_hangs_the_process(eps, tmp_path):
    # In a child process: a crash (segfault) or hang there shows up here as a failure, not a dead test run.
    good = tmp_path / "good.safetensors"
    good.write_bytes(serialization.to_bytes(eps[4]))
    tests = pathlib.Path(__file__).parent
    result = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT, str(tests), os.environ.get("EF_COMFYUI", str(tests.parent / ".cache" / "ComfyUI")), str(good)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    refused, loaded = map(int, result.stdout.split()[-2:])
    assert refused + loaded == 300 and refused > 250  # byte flips inside tensor data may still load: that is fine


def test_maps_for_another_family_are_refused_after_loading(eps, comfy_folders):
    maps = eps[4]
    path = comfy_folders / "input" / "eps.safetensors"
    serialization.save(maps, str(path))
    (loaded,) = EditFriendlyLoadNoiseMaps.execute("eps.safetensors").result
    flow = tiny_models.sd3_flow(seed=0)
    with pytest.raises(EditFriendlyInputError, match="another model family"):
        pipeline.regenerate(flow.patcher, flow.conditioning(1), flow.conditioning(2), loaded, 3.5, 0)


# ---------------------------------------------------------------------------------------------- custom sampling


def run_custom(guider, maps, skip, noise=None, sigmas=None, latent=None):
    sampler, own_sigmas, own_latent = EditFriendlySamplerCustom.execute(maps, skip).result
    noise = noise or custom_sampler.DisableNoise.execute().result[0]
    sigmas = own_sigmas if sigmas is None else sigmas
    output = custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, own_latent if latent is None else latent).result
    return output[0]["samples"]


def test_sampler_custom_advanced_with_cfg_guider_reconstructs(eps):
    tiny, latent, positive, negative, maps = eps
    (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, 3.5).result
    assert (run_custom(guider, maps, 3) - latent["samples"]).abs().max().item() <= TOLERANCE
    (edit_guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, tiny.conditioning(9), negative, 9.0).result
    assert (run_custom(edit_guider, maps, 3) - latent["samples"]).abs().max().item() > 0.01


def test_basic_guider_on_flux_reconstructs():
    flux = tiny_models.flux_flow(seed=0)
    latent = tiny_models.latent(flux, height=8, width=8, seed=2)
    positive = flux.conditioning(1)
    maps = pipeline.invert(flux.patcher, positive, flux.conditioning(2), latent, 8, 1.0, "simple", 1.0, 0)
    (guider,) = custom_sampler.BasicGuider.execute(flux.patcher, positive).result
    assert (run_custom(guider, maps, 2) - latent["samples"]).abs().max().item() <= TOLERANCE


def test_dual_cfg_guider_drives_an_edit(eps):
    tiny, latent, positive, negative, maps = eps
    (guider,) = custom_sampler.DualCFGGuider.execute(tiny.patcher, tiny.conditioning(9), positive, negative, 6.0, 2.0, "regular").result
    edited = run_custom(guider, maps, 2)
    assert torch.isfinite(edited).all() and (edited - latent["samples"]).abs().max().item() > 0.01


def test_perp_neg_guider_drives_an_edit(eps):
    import comfy_extras.nodes_perpneg as perpneg

    tiny, latent, positive, negative, maps = eps
    (guider,) = perpneg.PerpNegGuider.execute(tiny.patcher, tiny.conditioning(9), negative, tiny.conditioning(3), 7.0, 1.0).result
    edited = run_custom(guider, maps, 2)
    assert torch.isfinite(edited).all() and (edited - latent["samples"]).abs().max().item() > 0.01


def test_sigmas_that_are_not_the_maps_are_refused(eps):
    tiny, latent, positive, negative, maps = eps
    (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, 3.5).result
    (other,) = custom_sampler.BasicScheduler.execute(tiny.patcher, "karras", 10, 1.0).result
    with pytest.raises(ValueError, match="not a tail of the schedule"):
        run_custom(guider, maps, 0, sigmas=other)


def test_a_latent_other_than_the_source_is_refused(eps):
    tiny, latent, positive, negative, maps = eps
    (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, 3.5).result
    other_image = tiny_models.latent(tiny, batch=1, height=8, width=12, seed=7)
    half_denoised = {"samples": latent["samples"] + 0.3 * torch.randn_like(latent["samples"])}  # as another sampler leaves it
    for given in (other_image, half_denoised, {"samples": torch.zeros_like(latent["samples"])}):
        with pytest.raises(EditFriendlyInputError, match="not the one these noise maps were made from"):
            run_custom(guider, maps, 3, latent=given)
    # The same latent in bfloat16 (as a half-precision graph hands it on) is still the source.
    rounded = {"samples": latent["samples"].bfloat16()}
    assert (run_custom(guider, maps, 3, latent=rounded) - latent["samples"]).abs().max().item() <= TOLERANCE


def test_seed_dependent_conditioning_needs_the_inversions_seed(eps):
    import node_helpers

    tiny, latent, _, negative, _ = eps
    # Stand-in for unCLIP (no tiny unCLIP model here): the key under which ComfyUI's unCLIP and upscale models
    # draw their augmentation noise from the sampler's seed; the SD1.5 model itself ignores it.
    positive = node_helpers.conditioning_set_values(tiny.conditioning(1), {"noise_augmentation": 0.1})
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "ddim_uniform", 1.0, 5)
    (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, 3.5).result
    with pytest.raises(EditFriendlyInputError, match="RandomNoise node with seed 5"):
        run_custom(guider, maps, 0)
    (noise,) = custom_sampler.RandomNoise.execute(5).result
    assert (run_custom(guider, maps, 0, noise=noise) - latent["samples"]).abs().max().item() <= TOLERANCE


def test_a_latent_of_one_variation_is_told_to_use_the_nodes_latent(eps):
    tiny, latent, positive, negative, _ = eps
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "ddim_uniform", 1.0, 5, variations=2)
    (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, 3.5).result
    with pytest.raises(EditFriendlyInputError, match="2 variations of each latent"):
        run_custom(guider, maps, 0, latent=latent)


# ---------------------------------------------------------------------------------------------- masked edits


def test_hard_mask_keeps_the_source_outside_exactly(eps):
    tiny, latent, positive, negative, maps = eps
    mask = torch.zeros(1, 8, 12)
    mask[:, :, :6] = 1.0
    edited = pipeline.regenerate(tiny.patcher, tiny.conditioning(9), negative, maps, 9.0, 2, mask)
    source = latent["samples"]
    assert (edited[..., 6:] - source[..., 6:]).abs().max().item() <= 1e-5
    assert (edited[..., :6] - source[..., :6]).abs().mean().item() > 0.05


def test_soft_mask_blends_smoothly(eps):
    tiny, latent, positive, negative, maps = eps
    ramp = torch.linspace(0.0, 1.0, 12).expand(1, 8, 12)
    target = tiny.conditioning(9)
    full = pipeline.regenerate(tiny.patcher, target, negative, maps, 9.0, 2)
    soft = pipeline.regenerate(tiny.patcher, target, negative, maps, 9.0, 2, ramp)
    change = (soft - latent["samples"]).abs().mean(dim=(0, 1, 2))  # per column
    full_change = (full - latent["samples"]).abs().mean(dim=(0, 1, 2))
    assert change[0].item() <= 1e-5
    assert change[:4].mean() < change[4:8].mean() < change[8:].mean()
    # Weights below one half still let part of the edit through (a hard threshold would not).
    assert (change[1:6] > 1e-4).all() and (change[1:6] < full_change[1:6]).all(), (change, full_change)
    assert change[-1].item() == pytest.approx(full_change[-1].item(), rel=0.5)


def test_differential_diffusion_shapes_a_latent_noise_mask_at_every_step(eps):
    from comfy_extras.nodes_differential_diffusion import DifferentialDiffusion

    import nodes as comfy_builtin_nodes  # ComfyUI's own nodes.py

    tiny, latent, positive, negative, maps = eps
    ramp = torch.linspace(0.0, 1.0, 12).expand(1, 8, 12)
    (differential,) = DifferentialDiffusion.execute(tiny.patcher).result
    sampler, sigmas, start = EditFriendlySamplerCustom.execute(maps, 2).result
    (masked,) = comfy_builtin_nodes.SetLatentNoiseMask().set_mask(start, ramp)
    (noise,) = custom_sampler.DisableNoise.execute().result

    def custom(model, positive, cfg):
        (guider,) = custom_sampler.CFGGuider.execute(model, positive, negative, cfg).result
        return custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, masked).result[0]["samples"]

    assert (custom(differential, positive, 3.5) - latent["samples"]).abs().max().item() <= TOLERANCE
    target = tiny.conditioning(9)
    thresholded, soft = custom(differential, target, 9.0), custom(tiny.patcher, target, 9.0)
    assert (soft - pipeline.regenerate(tiny.patcher, target, negative, maps, 9.0, 2, ramp)).abs().max().item() <= 1e-5
    assert (thresholded - soft).abs().max().item() > 0.01  # the per-step threshold took effect
    assert (thresholded[..., 0] - latent["samples"][..., 0]).abs().max().item() <= 1e-5  # mask 0: the source


# ---------------------------------------------------------------------------------------------- variations


def test_variations_are_batched_seeds_that_each_reconstruct(eps):
    tiny, latent, positive, negative, _ = eps
    batched = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "ddim_uniform", 1.0, 5, variations=3)
    assert batched.latent_shape[0] == 3 and batched.variations == 3
    regenerated = pipeline.regenerate(tiny.patcher, positive, negative, batched, 3.5, 2)
    assert (regenerated - latent["samples"].expand(3, -1, -1, -1)).abs().max().item() <= TOLERANCE
    for k in range(3):
        single = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "ddim_uniform", 1.0, 5 + k)
        assert torch.allclose(batched.maps[:, k], single.maps[:, 0], atol=1e-3), k
    edits = pipeline.regenerate(tiny.patcher, tiny.conditioning(9), negative, batched, 9.0, 2)
    assert (edits[0] - edits[1]).abs().mean() > 0.01 and (edits[1] - edits[2]).abs().mean() > 0.01


# ---------------------------------------------------------------------------------------------- map previews


def test_preview_renders_chosen_steps_and_the_statistics_plot(eps, comfy_folders):
    from edit_friendly_ddpm.nodes import inspection
    from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlyNoiseMapPreview

    maps = eps[4]
    shown = EditFriendlyNoiseMapPreview.execute(maps, 4, 0)
    grid, plot = shown.result
    images = shown.ui.as_dict()["images"]  # an output node: both pictures are also shown on the node
    assert [image["type"] for image in images] == ["temp", "temp"]
    assert all((comfy_folders / "temp" / image["subfolder"] / image["filename"]).is_file() for image in images)
    steps = inspection.chosen_steps(maps.steps, 4)
    assert steps[0] == 0 and steps[-1] == maps.steps - 1 and len(steps) == 4
    for image in (grid, plot):
        assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
        assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    tile = inspection.TILE // max(maps.latent_shape[-2:])
    assert grid.shape[2] == len(steps) * maps.latent_shape[-1] * tile
    assert grid[0, : maps.latent_shape[-2] * tile].std() > 0.1  # the tiles show structure, not a flat colour
    std, correlation = inspection.map_statistics(maps)
    assert std.shape == (maps.steps - 1,) and correlation.shape == (maps.steps - 2,)
    flat = maps.maps[:-1, 0].flatten(1).double()
    pearson = [torch.corrcoef(flat[i : i + 2])[0, 1] for i in range(maps.steps - 2)]  # lag-1 correlation, computed apart
    assert torch.allclose(correlation, torch.stack(pearson), atol=1e-9)
    assert torch.allclose(std.float(), maps.maps[:-1, 0].flatten(1).std(dim=1), rtol=1e-4)
    with pytest.raises(EditFriendlyInputError, match="batch_index"):
        EditFriendlyNoiseMapPreview.execute(maps, 4, 1)


def test_preview_of_a_one_step_inversion(eps, comfy_folders):
    from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlyNoiseMapPreview

    tiny, latent, positive, negative, _ = eps
    one_step = pipeline.invert(tiny.patcher, positive, negative, latent, 1, 3.5, "ddim_uniform", 1.0, 0)
    grid, plot = EditFriendlyNoiseMapPreview.execute(one_step, 8, 0).result  # only the residual: no statistics to plot
    assert grid.shape[0] == plot.shape[0] == 1 and torch.isfinite(plot).all()
