"""Turns a ComfyUI workflow as the frontend saves it (UI format) into the API format /prompt takes.

Driven by /object_info, as the frontend itself does: each node's widget values are matched to its
inputs in `input_order`, skipping the extra value the frontend stores after an input with
`control_after_generate` (the "fixed"/"randomize" choice) and after an image upload input; links
become `[source node id, output slot]`. Frontend-only nodes (notes, reroutes, primitives) are
handled or dropped. `validate` checks an API prompt against /object_info the way a reviewer would:
node types exist, linked types match, numbers are within min/max and combo values are among the options.

Standard library only, so scripts (start.sh's headless mode) and tests share it.
"""

from __future__ import annotations

import copy

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Frontend-only nodes. (PrimitiveString, PrimitiveInt, ... are real server nodes and stay.)
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "GroupNode"}
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    pass


def _input_spec(info: dict, name: str):
    for section in ("required", "optional"):
        spec = info.get("input", {}).get(section, {}).get(name)
        if spec is not None:
            return spec, section
    return None, None


def input_type(spec) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def input_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec) -> bool:
    options = input_options(spec)
    return input_type(spec) in WIDGET_TYPES and not options.get("forceInput", False)


def combo_options(spec) -> list:
    return spec[0] if isinstance(spec[0], list) else input_options(spec).get("options", [])


def widget_names(info: dict) -> list[tuple[str, int]]:
    """(input name, number of widgets_values it takes) in the order the frontend stores them."""
    names = []
    order = info.get("input_order", {})
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec, _ = _input_spec(info, name)
            if spec is None or not is_widget(spec):
                continue
            options = input_options(spec)
            extra = 1 if options.get("control_after_generate") or options.get("image_upload") else 0
            names.append((name, 1 + extra))
    return names


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow (dict of node id -> {class_type, inputs})."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"], link.get("type"))
        else:
            link_id, origin, origin_slot, target, target_slot, kind = link[:6]
            links[link_id] = (origin, origin_slot, target, target_slot, kind)

    def resolve(origin, slot, seen=()):
        """Follows reroutes and bypassed nodes back to a real output; None when the chain is cut."""
        node = nodes.get(origin)
        if node is None or origin in seen or node["type"] == "PrimitiveNode":
            return None  # a PrimitiveNode's value is already in the widget it drives
        if node["type"] == "Reroute" or node.get("mode") == BYPASSED:
            kind = None
            if node["type"] != "Reroute" and slot < len(node.get("outputs", [])):
                kind = node["outputs"][slot].get("type")
            for socket in node.get("inputs", []):
                if socket.get("link") is None:
                    continue
                source = links[socket["link"]]
                if node["type"] == "Reroute" or socket.get("type") == kind:
                    return resolve(source[0], source[1], seen + (origin,))
            return None
        if node.get("mode") == MUTED:
            return None
        return [str(origin), slot]

    prompt = {}
    for node_id, node in nodes.items():
        kind = node["type"]
        if kind in VIRTUAL_NODES or node.get("mode") in (MUTED, BYPASSED):
            continue
        info = object_info.get(kind)
        if info is None:
            raise WorkflowError(f"node {node_id}: unknown node type {kind!r} (not in /object_info)")
        inputs = {}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            values = None
            inputs.update(node["widgets_values"])
        if values is not None:
            position = 0
            for name, count in widget_names(info):
                if position >= len(values):
                    spec, section = _input_spec(info, name)
                    if section == "optional":
                        # Saved before the node gained this optional input: the frontend shows its default.
                        if "default" in input_options(spec):
                            inputs[name] = input_options(spec)["default"]
                        continue
                    raise WorkflowError(f"node {node_id} ({kind}): no widget value for {name!r}")
                inputs[name] = values[position]
                position += count
        for socket in node.get("inputs", []):
            if socket.get("link") is None:
                continue
            origin, origin_slot = links[socket["link"]][:2]
            source = resolve(origin, origin_slot)
            if source is not None:
                inputs[socket["name"]] = source
            elif socket["name"] in inputs and not is_widget(_input_spec(info, socket["name"])[0] or ["*"]):
                del inputs[socket["name"]]
        entry = {"class_type": kind, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(node_id)] = entry
    return prompt


def validate(prompt: dict, object_info: dict) -> list[str]:
    """Problems of an API prompt against /object_info; an empty list when it is sound."""
    problems = []
    for node_id, node in prompt.items():
        kind = node.get("class_type")
        info = object_info.get(kind)
        if info is None:
            problems.append(f"node {node_id}: unknown node type {kind!r}")
            continue
        required = info.get("input", {}).get("required", {})
        for name in required:
            if name not in node["inputs"]:
                problems.append(f"node {node_id} ({kind}): required input {name!r} missing")
        for name, value in node["inputs"].items():
            spec, _ = _input_spec(info, name)
            if spec is None:
                problems.append(f"node {node_id} ({kind}): unknown input {name!r}")
                continue
            expected = input_type(spec)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = prompt.get(value[0])
                if source is None:
                    problems.append(f"node {node_id} ({kind}).{name}: linked to missing node {value[0]}")
                    continue
                outputs = object_info.get(source["class_type"], {}).get("output", [])
                if not (0 <= value[1] < len(outputs)):
                    problems.append(f"node {node_id} ({kind}).{name}: output slot {value[1]} of {source['class_type']} does not exist")
                    continue
                produced = outputs[value[1]]
                if isinstance(produced, list):
                    produced = "COMBO"
                if "*" not in (expected, produced) and produced not in str(expected).split(","):
                    problems.append(f"node {node_id} ({kind}).{name}: expects {expected}, linked to {produced}")
                continue
            options = input_options(spec)
            if expected in ("INT", "FLOAT"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (expected == "INT" and not isinstance(value, int)):
                    problems.append(f"node {node_id} ({kind}).{name}: {value!r} is not {expected}")
                    continue
                if "min" in options and value < options["min"]:
                    problems.append(f"node {node_id} ({kind}).{name}: {value} below min {options['min']}")
                if "max" in options and value > options["max"]:
                    problems.append(f"node {node_id} ({kind}).{name}: {value} above max {options['max']}")
            elif expected == "COMBO":
                if value not in combo_options(spec):
                    problems.append(f"node {node_id} ({kind}).{name}: {value!r} not among {combo_options(spec)[:20]}")
            elif expected == "BOOLEAN" and not isinstance(value, bool):
                problems.append(f"node {node_id} ({kind}).{name}: {value!r} is not a boolean")
            elif expected == "STRING" and not isinstance(value, str):
                problems.append(f"node {node_id} ({kind}).{name}: {value!r} is not a string")
    return problems


def with_overrides(prompt: dict, overrides: dict) -> dict:
    """A copy of `prompt` with {class_type: {input: value or callable(old value)}} applied to every node of that type."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        for name, value in overrides.get(node["class_type"], {}).items():
            node["inputs"][name] = value(node["inputs"].get(name)) if callable(value) else value
    return prompt
