"""The documentation agrees with the code: generated parts are fresh, tables match the references.

Regenerate after changing config fields, configs/*.yaml, variants or the schedule:
    python tools/config_docs.py --write            # docs/configs.md + schedule tables
    python tools/config_docs.py --write --models   # ... + the models table (~3 min)
"""
import difflib
import glob
import os
import re
import sys

import pytest
import yaml

import effnet_tf
from effnet_tf import config as config_lib
from effnet_tf.config import apply_override_string

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
sys.path.insert(0, os.path.join(REPO, "tools"))
import config_docs  # noqa: E402  (tools/config_docs.py: the generator, outside the package)

from reference_values import REFERENCE_PARAMS  # noqa: E402  (tests/ is on sys.path)


def _read(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as handle:
        return handle.read()


def _diff_hint(expected, actual, path, command):
    diff = "".join(list(difflib.unified_diff(
        actual.splitlines(True), expected.splitlines(True), f"{path} (committed)", f"{path} (from the code)", n=1))[:40])
    return f"{path} is out of date; regenerate it with `{command}`.\n{diff}"


def _table_rows(text):
    """The cells of every markdown table row that is not a header separator."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(-+\|)+", line.strip()):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


# ---------------------------------------------------------------------------------------------
# docs/configs.md


def test_configs_md_is_generated_from_the_current_code():
    expected = config_docs.render_markdown()
    actual = _read("configs.md")
    assert actual.rstrip("\n") == expected.rstrip("\n"), _diff_hint(
        expected, actual, "docs/configs.md", config_docs.REGENERATE)


def test_configs_md_documents_every_key_with_its_type_and_default():
    """Independent of the generator: parse the key tables back and compare with the dataclasses."""
    rows = {row[0].strip("`"): row for row in _table_rows(_read("configs.md")) if len(row) == 4
            and row[0].startswith("`") and "." in row[0]}
    defaults = config_lib.ExperimentConfig()
    assert list(rows) == config_lib.valid_keys()
    for key, field in config_lib.config_fields():
        _, type_cell, default_cell, meaning = rows[key]
        assert yaml.safe_load(default_cell.strip("`")) == config_lib.get_value(defaults, key), key
        assert field.metadata["help"].split()[0] in meaning, key
        optional = type(None) in getattr(config_lib.field_types()[key], "__args__", ())
        assert type_cell.endswith("or null") == optional, (key, type_cell)
        for choice in field.metadata.get("choices", ()):
            assert f"`{yaml.safe_dump(choice).splitlines()[0]}`" in meaning, (key, choice)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))),
                         ids=os.path.basename)
def test_every_shipped_config_is_listed_and_loads(path):
    name = os.path.basename(path)
    assert f"`configs/{name}`" in _read("configs.md"), f"docs/configs.md does not mention configs/{name}"
    config = config_lib.validate(config_lib.load_yaml_files([path]))
    config_docs.plan_for_docs(config)


def test_params_override_examples_in_configs_md_are_valid():
    text = _read("configs.md")
    commands = re.findall(r"^effnet-train .*?(?<!\\)$", text.replace("\\\n", " "), flags=re.M)
    assert len(commands) >= 3
    for command in commands:
        config_files = re.findall(r"--config=(\S+)", command)
        (override,) = re.findall(r"--params_override='([^']*)'", command)
        config = config_lib.load_yaml_files([os.path.join(REPO, f) for f in config_files])
        apply_override_string(config, override)
        config_lib.validate(config)


def test_unknown_key_message_quoted_in_configs_md_is_real():
    config = config_lib.ExperimentConfig()
    with pytest.raises(ValueError) as info:
        apply_override_string(config, "train.epoch=3")
    assert "Unknown config key 'train.epoch'" in str(info.value)
    assert "Closest valid keys: train.epochs" in str(info.value)
    assert "Closest valid keys: train.epochs" in _read("configs.md")


# ---------------------------------------------------------------------------------------------
# docs/progressive_learning.md


def test_progressive_schedule_tables_are_generated_from_the_schedule():
    actual = config_docs.extract_region(_read("progressive_learning.md"), "schedule")
    expected = config_docs.render_schedule()
    assert actual == expected, _diff_hint(
        expected, actual, "docs/progressive_learning.md (schedule region)",
        "python tools/config_docs.py --write")


def test_write_docs_repairs_stale_generated_parts(tmp_path):
    for name in ("configs.md", "progressive_learning.md"):
        stale = _read(name).replace("| 4 | 263–350 (88) |", "| 4 | 263–350 (87) |").replace("`350`", "`300`")
        assert stale != _read(name)
        (tmp_path / name).write_text(stale, encoding="utf-8")
    config_docs.write_docs(str(tmp_path))
    for name in ("configs.md", "progressive_learning.md"):
        assert (tmp_path / name).read_text(encoding="utf-8") == _read(name)


def test_progressive_table_matches_hand_computed_v2s_values():
    """The paper's and the official formulas worked by hand for V2-S (128 -> 300, 4 stages, 350 epochs)."""
    region = config_docs.extract_region(_read("progressive_learning.md"), "schedule")
    rows = [r for r in _table_rows(region) if r[0].isdigit()]
    assert [r[1] for r in rows] == ["1–87 (87)", "88–175 (88)", "176–262 (87)", "263–350 (88)"]
    # paper: 128 + 172 i/3 = 128, 185.3, 242.7, 300 -> 32-px buckets (+ the final 300) and 4-px buckets
    assert [int(r[2]) for r in rows] == [128, 192, 256, 300]
    assert [int(r[3]) for r in rows] == [128, 184, 244, 300]
    # official: 128 + 172 (i+1)/4 = 171, 214, 257, 300 -> 4-px buckets (214 ties up to 216)
    assert [int(r[4]) for r in rows] == [172, 216, 256, 300]
    assert [float(r[5]) for r in rows] == pytest.approx([5, 6.67, 8.33, 10], abs=0.005)  # linspace(5, 10, 4)
    assert [float(r[8]) for r in rows] == pytest.approx([0.1, 0.133, 0.167, 0.2], abs=0.0005)
    assert {r[6] for r in rows} == {r[7] for r in rows} == {"0"}
    assert {r[9] for r in rows} == {"0.2"}


# ---------------------------------------------------------------------------------------------
# docs/models.md


def _model_rows():
    region = config_docs.extract_region(_read("models.md"), "models")
    rows = _table_rows(region)
    assert rows[0] == list(config_docs.MODEL_COLUMNS)
    return rows[1:]


def test_models_table_lists_every_variant_with_its_registry_values():
    rows = _model_rows()
    assert [r[0].strip("`") for r in rows] == effnet_tf.list_models()
    for row in rows:
        name = row[0].strip("`")
        expected = config_docs.model_row(name, None)
        assert row[:8] == expected[:8] and row[9] == expected[9], (
            f"docs/models.md row {name} differs from get_variant(); regenerate with "
            "`python tools/config_docs.py --write --models`")


def test_models_table_parameter_counts_match_the_references():
    counts = {r[0].strip("`"): r[8] for r in _model_rows()}
    for name, params in REFERENCE_PARAMS.items():
        assert counts[name] == f"{params:,}", name
    # B8 and L2 have no published count: only their order.
    b8, l2 = (int(counts[n].replace(",", "")) for n in ("efficientnet-b8", "efficientnet-l2"))
    assert REFERENCE_PARAMS["efficientnet-b7"] < b8 < l2


# ---------------------------------------------------------------------------------------------
# docs/architecture.md and links


def test_architecture_names_every_module_and_only_existing_ones():
    text = _read("architecture.md")
    mentioned = set(re.findall(r"effnet_tf/[\w/]+\.py", text))
    missing = [p for p in mentioned if not os.path.exists(os.path.join(REPO, p))]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
    modules = [os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "effnet_tf", "*", "*.py"))
               if not p.endswith("__init__.py")]
    modules.append("effnet_tf/main.py")
    undocumented = sorted(m for m in modules if m not in mentioned)
    assert not undocumented, f"docs/architecture.md does not describe: {undocumented}"


@pytest.mark.parametrize("name", ["architecture.md", "configs.md", "progressive_learning.md", "models.md",
                                  "tpu.md", "troubleshooting.md", "recipe.md"])
def test_relative_links_resolve(name):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", _read(name)):
        assert os.path.exists(os.path.normpath(os.path.join(DOCS, target))), f"{name}: broken link {target}"
