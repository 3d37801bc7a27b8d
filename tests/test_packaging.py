"""Packaging: the Registry's pyproject fields, ComfyUI-Manager's install path, and the publish file list."""

import os
import pathlib
import re
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
    for folder, suffixes in (("web", (".js",)), ("example_workflows", (".json",))):
        on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*") if p.suffix in suffixes}
        assert on_disk, f"{folder}/ has no {suffixes} files"
        assert on_disk <= names, on_disk - names
    images = [p for p in (ROOT / "example_workflows").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
    assert images and all(p.relative_to(ROOT).as_posix() in names for p in images)
    assert not any(name.startswith((".cache/", "benchmarks/", "tests/")) or name.endswith(".safetensors") for name in names)
    assert "docs/math.md" in names
