#!/usr/bin/env python
"""Writes locales/en/nodeDefs.json, the English source of the frontend's node translations, from the nodes' own
schemas (each node's GET_NODE_INFO_V1, what ComfyUI serves at /object_info), so that it never drifts from them.

ComfyUI (app/custom_node_manager.py) merges every custom node's `locales/<lang>/nodeDefs.json` into `/i18n`
under `nodeDefs`; the frontend looks nodes up there by node ID. The layout is the one the frontend's own
collect-i18n-node-defs script writes for the core nodes:

    {"<NodeId>": {"display_name": ..., "description": ...,
                  "inputs": {"<input>": {"name": ..., "tooltip": ...}, "control_after_generate": {"name": ...}},
                  "outputs": {"<index>": {"name": ..., "tooltip": ...}}}}

Keys have dots replaced by underscores; an output's name is left out where it is its data type (the frontend
then shows the data type's own translation). The zh, ja and ko files are written by hand;
tests/test_locales.py checks that they have exactly the keys of the English one.

    python scripts/make_locales.py            # rewrite locales/en/nodeDefs.json
    python scripts/make_locales.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"
EN_NODE_DEFS = LOCALES / "en" / "nodeDefs.json"
PACKAGE = "edit_friendly_ddpm"
# The label the frontend gives the widget it adds after a seed with control_after_generate.
CONTROL_AFTER_GENERATE = "control after generate"


def normalize_key(name: str) -> str:
    """The frontend's normalizeI18nKey."""
    return name.replace(".", "_")


def _nodes():
    """The pack's node classes, loading ComfyUI and the pack if no one has (the tests already have)."""
    if PACKAGE not in sys.modules:
        comfyui = pathlib.Path(os.environ.get("EF_COMFYUI", ROOT / ".cache" / "ComfyUI"))
        sys.path.insert(0, str(comfyui))
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{PACKAGE}.nodes.comfy_nodes").NODES


def _entry(value: str, tooltip: str | None) -> dict:
    return {"name": value} | ({"tooltip": tooltip} if tooltip else {})


def node_locale(info: dict) -> dict:
    """One node's English entry, from its V1 node info."""
    inputs = {}
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            options = spec[1] if len(spec) > 1 else {}
            inputs[normalize_key(name)] = _entry(name, options.get("tooltip"))
            if options.get("control_after_generate"):
                inputs["control_after_generate"] = {"name": CONTROL_AFTER_GENERATE}
    outputs = {}
    for index, (kind, name) in enumerate(zip(info["output"], info["output_name"])):
        tooltips = info.get("output_tooltips") or []
        tooltip = tooltips[index] if index < len(tooltips) else None
        entry = ({} if name == kind else {"name": name}) | ({"tooltip": tooltip} if tooltip else {})
        if entry:
            outputs[str(index)] = entry
    entry = {"display_name": info["display_name"] or info["name"]}
    if info.get("description"):
        entry["description"] = info["description"]
    if inputs:
        entry["inputs"] = inputs
    if outputs:
        entry["outputs"] = outputs
    return entry


def english() -> dict:
    """locales/en/nodeDefs.json as it should be."""
    infos = [node.GET_NODE_INFO_V1() for node in _nodes()]
    return {normalize_key(info["name"]): node_locale(info) for info in sorted(infos, key=lambda info: info["name"])}


def render(locale: dict) -> str:
    return json.dumps(locale, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    text = render(english())
    if parser.parse_args().check:
        if not EN_NODE_DEFS.is_file() or EN_NODE_DEFS.read_text(encoding="utf-8") != text:
            print(f"{EN_NODE_DEFS.relative_to(ROOT)} is out of date: run python scripts/make_locales.py", file=sys.stderr)
            return 1
        return 0
    EN_NODE_DEFS.parent.mkdir(parents=True, exist_ok=True)
    EN_NODE_DEFS.write_text(text, encoding="utf-8")
    print(f"wrote {EN_NODE_DEFS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
