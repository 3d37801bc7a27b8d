"""The frontend's translations (locales/<lang>/nodeDefs.json) and help pages (web/docs/) of every node.

ComfyUI merges each custom node's locales/<lang>/nodeDefs.json into /i18n (app/custom_node_manager.py), and the
frontend's node documentation panel fetches /extensions/<pack>/docs/<NodeId>/<locale>.md, then
/extensions/<pack>/docs/<NodeId>.md, from the pack's WEB_DIRECTORY (web/). The English translations are
generated from the node schemas by scripts/make_locales.py; the others are written by hand and must have exactly
its keys. tests/test_browser.py checks that both frontends show them.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_locales  # noqa: E402

LANGUAGES = ("en", "zh", "ja", "ko")
TRANSLATED = ("zh", "ja", "ko")
DOCS = ROOT / "web" / "docs"
NODES = make_locales._nodes()
NODE_IDS = [node.GET_NODE_INFO_V1()["name"] for node in NODES]
# Parameter names stay as they are in every language: they are what the node shows and what the help pages name.
KEPT_AS_IS = ("name",)
# Proper names that no language translates: the method's own name is the node's title everywhere.
PROPER_NAMES = {("EditFriendlyFlowEdit", "display_name")}


def load(lang: str) -> dict:
    return json.loads((make_locales.LOCALES / lang / "nodeDefs.json").read_text(encoding="utf-8"))


def key_paths(tree, prefix=()) -> set[tuple[str, ...]]:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(key_paths(value, prefix + (key,)) for key, value in tree.items())) if tree else {prefix}


@pytest.fixture(scope="module")
def english() -> dict:
    return make_locales.english()


def test_english_is_what_the_script_generates(english):
    written = (make_locales.EN_NODE_DEFS).read_text(encoding="utf-8")
    assert written == make_locales.render(english), "locales/en/nodeDefs.json is out of date: run python scripts/make_locales.py"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_node_input_and_output_has_an_entry(english, lang):
    locale = load(lang)
    for node in NODES:
        info = node.GET_NODE_INFO_V1()
        entry = locale.get(info["name"])
        assert entry, f"{lang}: no entry for {info['name']}"
        assert entry.get("display_name", "").strip(), (lang, info["name"])
        assert entry.get("description", "").strip(), (lang, info["name"])
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                translated = entry.get("inputs", {}).get(make_locales.normalize_key(name))
                assert translated and translated.get("name"), f"{lang}: {info['name']} input {name}"
                if len(spec) > 1 and spec[1].get("tooltip"):
                    assert translated.get("tooltip", "").strip(), f"{lang}: {info['name']} input {name} has no tooltip"
        for index, tooltip in enumerate(info.get("output_tooltips") or []):
            translated = entry.get("outputs", {}).get(str(index))
            assert translated and translated.get("tooltip", "").strip(), f"{lang}: {info['name']} output {index}"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_have_exactly_the_english_keys(english, lang):
    locale = load(lang)
    expected, found = key_paths(english), key_paths(locale)
    assert not expected - found, f"{lang} lacks {sorted(expected - found)}"
    assert not found - expected, f"{lang} has stale keys {sorted(found - expected)}"
    for path in expected:
        value = locale
        for key in path:
            value = value[key]
        assert isinstance(value, str) and value.strip(), (lang, path)
        if path[-1] in KEPT_AS_IS and path[-2] != "control_after_generate":
            english_value = english
            for key in path:
                english_value = english_value[key]
            assert value == english_value, f"{lang}: {'.'.join(path)} renames a parameter"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_are_translated(english, lang):
    """A text copied over from English by mistake (display names, descriptions and tooltips differ in every language)."""
    locale = load(lang)
    for path in key_paths(english):
        if path[-1] in KEPT_AS_IS or path in PROPER_NAMES:
            continue
        value, english_value = locale, english
        for key in path:
            value, english_value = value.get(key, {}) if isinstance(value, dict) else None, english_value[key]
        if not isinstance(value, str):
            continue  # missing: test_translations_have_exactly_the_english_keys names it
        assert value != english_value, f"{lang}: {'.'.join(path)} is still English"
        assert re.search(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", value), f"{lang}: {'.'.join(path)} = {value!r}"


def help_pages() -> list[tuple[str, str, pathlib.Path]]:
    """(node ID, language, page): the English page every node has and the translated ones beside it."""
    pages = [(node_id, "en", DOCS / f"{node_id}.md") for node_id in NODE_IDS]
    pages += [(node_id, lang, DOCS / node_id / f"{lang}.md") for node_id in NODE_IDS for lang in TRANSLATED]
    return pages


@pytest.mark.parametrize("node_id,lang,page", help_pages(), ids=lambda value: value.name if isinstance(value, pathlib.Path) else str(value))
def test_help_page_exists_and_names_every_input_and_output(node_id, lang, page):
    assert page.is_file(), f"no help page {page.relative_to(ROOT)}"
    text = page.read_text(encoding="utf-8")
    info = next(node.GET_NODE_INFO_V1() for node in NODES if node.GET_NODE_INFO_V1()["name"] == node_id)
    assert text.startswith("# "), "a page starts with the node's name as its heading"
    display_name = load(lang)[node_id]["display_name"]
    assert text.splitlines()[0] == f"# {display_name}", "the heading is the node's display name in that language"
    # The page's sections, in every language: what the node does, then "## Inputs", "## Outputs" and "## Tips".
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    assert len(sections) == 4, f"{page.relative_to(ROOT)}: expected the sections Inputs, Outputs and Tips"
    inputs, outputs = sections[1].splitlines(), sections[2]
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            # Each input is one list item, "- `name` (default **value**...): what it does".
            item = [line for line in inputs if line.startswith(f"- `{name}`")]
            assert len(item) == 1, f"{page.relative_to(ROOT)} has {len(item)} list items for input {name}"
            default = spec[1].get("default") if len(spec) > 1 else None
            if default not in (None, ""):
                assert f"**{default}**" in item[0], f"{page.relative_to(ROOT)}: {name} does not give its default {default!r}"
    listed = re.findall(r"^- `([^`]+)`", outputs, flags=re.MULTILINE)
    assert listed == info["output_name"], f"{page.relative_to(ROOT)} lists the outputs {listed}"


def test_no_help_page_for_a_node_that_does_not_exist():
    pages = {page.stem for page in DOCS.glob("*.md")} | {folder.name for folder in DOCS.iterdir() if folder.is_dir()}
    assert pages == set(NODE_IDS), sorted(pages ^ set(NODE_IDS))
    for folder in DOCS.iterdir():
        if folder.is_dir():
            assert {page.stem for page in folder.glob("*")} <= set(TRANSLATED), sorted(folder.iterdir())
