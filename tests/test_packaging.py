"""Packaging: the Registry's pyproject fields, ComfyUI-Manager's install path, and the publish file list."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(lines):
    return [re.split(r"[<>=!~ ;\[]", line.strip())[0].lower() for line in lines if line.strip() and not line.startswith("#")]


def test_pyproject_has_the_registry_fields():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", project["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    for key in ("description", "license", "requires-python", "dependencies", "urls"):
        assert project[key], key
    assert project["urls"]["Repository"].startswith("https://")
    for key in ("PublisherId", "DisplayName", "includes", "requires-comfyui"):
        assert key in comfy, key


def test_pyproject_keys_are_the_ones_comfyuis_parser_reads():
    # comfy_config mirrors the Registry's parser: a URL key it does not know (such as "Bug Tracker") is dropped,
    # and an empty Icon would be an icon of "".
    from comfy_config import config_parser, types

    known = {field.alias for field in types.URLs.model_fields.values()}
    urls = PYPROJECT["project"]["urls"]
    assert set(urls) <= known, f"unknown [project.urls] keys {sorted(set(urls) - known)}; comfy_config reads {sorted(known)}"
    assert all(value for value in PYPROJECT["tool"]["comfy"].values()), "an empty [tool.comfy] value"
    parsed = config_parser.extract_node_configuration(str(ROOT))
    assert parsed.project.urls.issues == urls["Issues"] and parsed.project.urls.issues.endswith("/issues")
    assert parsed.project.urls.repository == urls["Repository"]


def test_requires_comfyui_is_the_version_the_tests_run_on():
    comfyui = pathlib.Path(os.environ.get("EF_COMFYUI", ROOT / ".cache" / "ComfyUI"))
    tested = re.search(r'__version__ = "([^"]+)"', (comfyui / "comfyui_version.py").read_text()).group(1)
    assert PYPROJECT["tool"]["comfy"]["requires-comfyui"] == f">={tested}"


def test_requirements_mirror_the_dependencies_and_leave_torch_out():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert requirement_names(lines) == requirement_names(PYPROJECT["project"]["dependencies"])
    assert not {"torch", "torchvision", "torchaudio"} & set(requirement_names(lines))
    assert not (ROOT / "install.py").exists(), "ComfyUI-Manager needs no install script for this pack"


def test_package_imports_outside_comfyui():
    # A plain interpreter without ComfyUI on the path: the package and its pure modules must still load.
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('pack', {str(ROOT / '__init__.py')!r}, submodule_search_locations=[{str(ROOT)!r}]); "
        "module = importlib.util.module_from_spec(spec); sys.modules['pack'] = module; spec.loader.exec_module(module); "
        "import pack.nodes.sampling, pack.nodes.transforms, pack.nodes.validation, pack.nodes.noise_maps; "
        "assert 'comfy' not in sys.modules and not hasattr(module, 'comfy_entrypoint'); print(module.WEB_DIRECTORY)"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "./web"


def test_an_older_comfyui_without_the_v3_api_gets_a_clear_message(tmp_path):
    # A stand-in for a ComfyUI before 0.3.75: its `comfy` package without `comfy_api` (no old release is here).
    (tmp_path / "comfy").mkdir()
    (tmp_path / "comfy" / "__init__.py").write_text("")
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('pack', {str(ROOT / '__init__.py')!r}, submodule_search_locations=[{str(ROOT)!r}]); "
        "module = importlib.util.module_from_spec(spec); sys.modules['pack'] = module; spec.loader.exec_module(module); "
        "assert not hasattr(module, 'comfy_entrypoint')"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "need ComfyUI 0.3.75 or newer" in result.stderr


def publish_file_list():
    """What the Registry packs: the git-tracked files, minus what .comfyignore matches, plus what `includes` names."""
    def git_files(*options):
        return set(subprocess.run(["git", "ls-files", "--cached", *options], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split())

    ignored = git_files("--ignored", "--exclude-from=.comfyignore")  # git applies gitignore syntax, as the Registry does
    files = {pathlib.PurePosixPath(path) for path in git_files() - ignored}
    for include in PYPROJECT["tool"]["comfy"]["includes"]:
        files |= {pathlib.PurePosixPath(p.relative_to(ROOT).as_posix()) for p in (ROOT / include).rglob("*") if p.is_file()}
    return files


def test_publish_list_holds_everything_needed_at_run_time():
    files = publish_file_list()
    names = {str(f) for f in files}
    for needed in ("__init__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE"):
        assert needed in names
    for module in (ROOT / "nodes").glob("*.py"):
        assert f"nodes/{module.name}" in names
    # The web extension, the node help pages (web/docs/) and the translations (locales/<lang>/nodeDefs.json).
    for folder, suffixes in (("web", (".js", ".md")), ("example_workflows", (".json",)), ("locales", (".json",))):
        on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*") if p.suffix in suffixes}
        assert on_disk, f"{folder}/ has no {suffixes} files"
        assert on_disk <= names, on_disk - names
    images = [p for p in (ROOT / "example_workflows").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
    assert images and all(p.relative_to(ROOT).as_posix() in names for p in images)
    assert not any(name.startswith((".cache/", "benchmarks/", "tests/")) or name.endswith(".safetensors") for name in names)
    assert "docs/math.md" in names


def test_publish_list_leaves_out_development_files():
    # The set-up, test and headless scripts pip-install packages and start subprocesses: not for custom_nodes.
    names = {str(f) for f in publish_file_list()}
    development = {"pytest.ini", "requirements-dev.txt"} | {
        p.relative_to(ROOT).as_posix() for folder in ("scripts", ".ci", "tests", "benchmarks") for p in (ROOT / folder).rglob("*") if p.is_file()
    }
    assert any(name.startswith("scripts/") for name in development)
    assert not development & names, sorted(development & names)


def run_setup(cache: pathlib.Path) -> subprocess.CompletedProcess:
    """scripts/setup.sh with its cache at `cache`, its printed paths read back through eval as the scripts do."""
    command = 'set -euo pipefail; paths=$("$0/scripts/setup.sh"); eval "$paths"; printf "%s\\n" "$EF_PYTHON" "$EF_COMFYUI"'
    return subprocess.run(["bash", "-c", command, str(ROOT)], env={**os.environ, "EF_CACHE_DIR": str(cache)}, capture_output=True, text=True, timeout=300, check=False)


def built_cache() -> tuple[pathlib.Path, pathlib.Path]:
    """The venv these tests run in and the ComfyUI they use, both made by scripts/setup.sh."""
    return pathlib.Path(sys.executable).parents[1], pathlib.Path(os.environ.get("EF_COMFYUI", ROOT / ".cache" / "ComfyUI"))


def test_setup_paths_survive_spaces_in_the_cache_path(tmp_path):
    venv, comfy = built_cache()
    cache = tmp_path / "a cache with spaces"
    cache.mkdir()
    (cache / "venv").symlink_to(venv)  # already built: setup only checks its stamps and prints
    (cache / "ComfyUI").symlink_to(comfy)
    result = run_setup(cache)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(cache / "venv" / "bin" / "python"), str(cache / "ComfyUI")]


def test_setup_never_deletes_or_installs_into_folders_it_did_not_make(tmp_path):
    venv, _ = built_cache()
    home = tmp_path / "home"
    (home / "ComfyUI" / "models").mkdir(parents=True)
    users_file = home / "ComfyUI" / "models" / "my-model.safetensors"
    users_file.write_bytes(b"weights")
    (home / "venv").symlink_to(venv)
    result = run_setup(home)
    assert result.returncode != 0 and "was not made by this script" in result.stderr
    assert users_file.read_bytes() == b"weights"

    other = tmp_path / "other"
    (other / "venv" / "bin").mkdir(parents=True)
    result = run_setup(other)
    assert result.returncode != 0 and "was not made by this script" in result.stderr
    assert sorted(p.name for p in (other / "venv").rglob("*")) == ["bin"]


def test_linking_never_replaces_an_installed_copy(tmp_path):
    installed = tmp_path / "ComfyUI" / "custom_nodes" / "edit-friendly-ddpm"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("# the user's installed copy\n")
    result = subprocess.run([str(ROOT / "scripts" / "link_pack.sh"), str(tmp_path / "ComfyUI")], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "is a folder, not a link" in result.stderr
    assert installed.is_dir() and not installed.is_symlink() and list(installed.iterdir()) == [installed / "__init__.py"]
    installed.rename(tmp_path / "ComfyUI" / "custom_nodes" / "old-copy")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "ComfyUI" / "custom_nodes" / "old-copy" / "pyproject.toml")
    result = subprocess.run([str(ROOT / "scripts" / "link_pack.sh"), str(tmp_path / "ComfyUI")], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and installed.resolve() == ROOT
    assert "another copy of this pack" in result.stderr
