"""The anomaly sets' registry: the ``anomaly:`` entries of ``conf/data/*.yaml``, and nothing else.

The names every command line takes are checked against the YAML files themselves (read with
PyYAML, not through :mod:`fsbench.registry`), so a set added to a data config that some command
cannot resolve fails here, and so would a hand-kept copy of the names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import yaml
from test_datasets import make_fs_laf, make_fs_static, make_road_anomaly, make_smiyc, needs_webp

from fsbench import registry
from fsbench.cli import data as data_cli
from fsbench.data import SyntheticScenes
from fsbench.data.anomaly_sets import (
    FishyscapesLostAndFound,
    FishyscapesStatic,
    RoadAnomaly,
    SegmentMeIfYouCan,
    anomaly_set,
)
from fsbench.data.check import DatasetError
from fsbench.data.convert import build_reader
from fsbench.data.layouts import LAYOUTS
from fsbench.registry import DatasetEntry, anomaly_sets, build_anomaly_set

CONF = Path(__file__).resolve().parents[1] / "conf"


def yaml_sets(conf: Path = CONF) -> dict[str, tuple[str, dict]]:
    """Every ``anomaly:`` entry of ``conf/data/*.yaml``: name -> (data config, node), by PyYAML."""
    found = {}
    for path in sorted((conf / "data").glob("*.yaml")):
        for name, node in (yaml.safe_load(path.read_text()).get("anomaly") or {}).items():
            found[name] = (path.stem, node)
    return found


YAML_SETS = yaml_sets()
FILE_SETS = sorted(name for name, (_, node) in YAML_SETS.items() if "root" in node)
GENERATED_SETS = sorted(name for name, (_, node) in YAML_SETS.items() if "root" not in node)


def _choices(parser: argparse.ArgumentParser, command: str, dest: str) -> list[str]:
    """The choices of positional ``dest`` of subcommand ``command``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(next(a for a in sub.choices[command]._actions if a.dest == dest).choices)


# ------------------------------------------------------------------ every set, every command
def test_the_shipped_data_configs_define_the_known_sets():
    assert {"fs_lost_and_found", "fs_static", "road_anomaly", "smiyc_anomaly"} <= set(YAML_SETS)
    assert {"smiyc_obstacle", "synthetic_anomaly"} <= set(YAML_SETS)
    assert GENERATED_SETS == ["synthetic_anomaly"]


def test_the_registry_knows_every_yaml_set_as_written():
    entries = anomaly_sets()
    assert sorted(entries) == sorted(YAML_SETS)
    for name, (group, node) in YAML_SETS.items():
        entry = entries[name]
        assert isinstance(entry, DatasetEntry)
        assert (entry.name, entry.group, entry.target) == (name, group, node["_target_"])
        assert entry.params == tuple(key for key in node if key != "_target_")
        assert entry.roots == tuple(k for k in node if k != "root" and k.endswith("_root"))
        assert entry.title and entry.reads_files == ("root" in node)
        constants = {k: v for k, v in node.items() if k != "_target_" and "${" not in str(v)}
        constants = {k: v for k, v in constants.items() if v != "???"}
        assert constants.items() <= dict(entry.defaults).items()  # e.g. track: obstacle


def test_check_takes_every_yaml_set():
    assert set(_choices(data_cli._parser(), "check", "name")) == {"cityscapes", *YAML_SETS}
    assert set(data_cli.DATASETS) == {"cityscapes", *YAML_SETS}


def test_score_takes_every_yaml_set_and_each_second_root(tmp_path):
    from fsbench.cli import score

    parser = score._parser()
    (data,) = [action for action in parser._actions if action.dest == "data"]
    assert set(data.choices) == set(YAML_SETS)
    options = {o for a in parser._actions for o in a.option_strings}
    for name, (_, node) in YAML_SETS.items():
        for key in node:
            if key.endswith("_root") and key != "root":
                assert "--" + key.replace("_", "-") in options
        # each set resolves to its reader: the empty folder is refused by the reader itself
        argv = [str(tmp_path), *(["--data", name] if "root" not in node else [])]
        if "root" in node:
            argv += [str(tmp_path / "nowhere"), "--data", name]
            args = parser.parse_args(argv)
            with pytest.raises(DatasetError):
                score.build_dataset(args.data, args.root, args)
        else:
            args = parser.parse_args([*argv, "--length", "2", "--size", "8", "16"])
            assert len(score.build_dataset(args.data, args.root, args)) == 2


def test_check_has_an_option_for_every_second_root():
    options = {o for a in _check_parser()._actions for o in a.option_strings}
    for _, node in YAML_SETS.values():
        for key in node:
            if key.endswith("_root") and key != "root":
                assert "--" + key.replace("_", "-") in options


def _check_parser() -> argparse.ArgumentParser:
    sub = next(a for a in data_cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["check"]


@pytest.mark.parametrize("name", FILE_SETS)
def test_check_convert_and_anomaly_set_resolve_every_set_read_from_files(name, tmp_path):
    """Each command reaches the set's reader, which refuses the empty folder with its own
    :class:`DatasetError` (the registry's unknown-name error is a plain ValueError)."""
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DatasetError):
        anomaly_set(name, nowhere)
    if name in LAYOUTS:
        with pytest.raises(DatasetError):
            build_reader(name, nowhere)
    else:
        with pytest.raises(ValueError, match="no on-disk layout"):
            build_reader(name, nowhere)
    (build,) = data_cli._builders(name, _check_parser().parse_args([name, str(nowhere)]))
    with pytest.raises(DatasetError):
        build()


@pytest.mark.parametrize("name", GENERATED_SETS)
def test_check_convert_and_anomaly_set_resolve_every_generated_set(name, capsys):
    assert len(anomaly_set(name)) >= 1
    with pytest.raises(ValueError, match="has no on-disk layout"):
        build_reader(name, "anywhere")
    assert data_cli.main(["check", name, "--quick"]) == 0
    assert "OK (structure only)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        data_cli.main(["check", name, "some/folder"])
    assert usage.value.code == 2 and "give no ROOT" in capsys.readouterr().err


def test_every_layout_belongs_to_a_yaml_set():
    assert set(LAYOUTS) <= set(YAML_SETS)


def test_check_needs_root_for_a_set_read_from_files(capsys):
    with pytest.raises(SystemExit) as usage:
        data_cli.main(["check", "road_anomaly"])
    assert usage.value.code == 2 and "road_anomaly needs ROOT" in capsys.readouterr().err


# ------------------------------------------------------------------ the readers, built by name
@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("registry")
    fs_laf, laf = make_fs_laf(tmp)
    fishyscapes, cs_static = make_fs_static(tmp)
    return {
        "fs_laf": fs_laf,
        "laf": laf,
        "fishyscapes": fishyscapes,
        "cs_static": cs_static,
        "road_anomaly": make_road_anomaly(tmp),
        "smiyc": make_smiyc(tmp),
    }


def _same_frames(built, direct) -> None:
    assert type(built) is type(direct) and len(built) == len(direct) > 0
    for index in range(len(direct)):
        a, b = built[index], direct[index]
        assert a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["anomaly"], b["anomaly"])


READERS = [  # name, the tree keys passed as (root, options), the direct construction
    ("fs_lost_and_found", lambda t: (t["fs_laf"], {"laf_root": t["laf"]}),
     lambda t: FishyscapesLostAndFound(t["fs_laf"], laf_root=t["laf"])),
    ("fs_static", lambda t: (t["fishyscapes"], {"cityscapes_root": t["cs_static"]}),
     lambda t: FishyscapesStatic(t["fishyscapes"], t["cs_static"], version=3)),
    ("road_anomaly", lambda t: (t["road_anomaly"], {}), lambda t: RoadAnomaly(t["road_anomaly"])),
    ("smiyc_anomaly", lambda t: (t["smiyc"], {}),
     lambda t: SegmentMeIfYouCan(t["smiyc"], track="anomaly")),
    pytest.param("smiyc_obstacle", lambda t: (t["smiyc"], {}),
                 lambda t: SegmentMeIfYouCan(t["smiyc"], track="obstacle"), marks=needs_webp),
]  # fmt: skip


@pytest.mark.parametrize(("name", "arguments", "direct"), READERS)
def test_build_anomaly_set_gives_the_frames_of_the_reader(trees, name, arguments, direct):
    root, options = arguments(trees)
    expected = direct(trees)
    _same_frames(build_anomaly_set(name, root, **options), expected)
    # the roots a reader does not take are dropped, so one call serves every set
    every_root = {"laf_root": trees["laf"], "cityscapes_root": trees["cs_static"], "version": 3}
    _same_frames(build_anomaly_set(name, root, **every_root), expected)
    _same_frames(anomaly_set(name, root, **options), expected)
    if name in LAYOUTS:
        _same_frames(build_reader(name, root, **options), expected)


def test_every_file_reader_of_the_configs_is_tested():
    tested = {param.values[0] if hasattr(param, "values") else param[0] for param in READERS}
    assert tested == set(FILE_SETS)


def test_build_anomaly_set_keeps_the_configs_constants_unless_overridden():
    built = build_anomaly_set("synthetic_anomaly")
    node = YAML_SETS["synthetic_anomaly"][1]
    shared = yaml.safe_load((CONF / "data" / "synthetic.yaml").read_text())["shared"]
    assert (built.split, built.length) == (node["split"], node["length"])
    assert (built.height, built.width, built.seed) == (shared["height"], shared["width"], 0)
    small = build_anomaly_set("synthetic_anomaly", length=3, height=32, width=64, seed=None)
    assert (small.split, len(small), small.height, small.width, small.seed) == (
        "anomaly", 3, 32, 64, shared["seed"],
    )  # fmt: skip
    _same_frames(small, SyntheticScenes("anomaly", 3, 32, 64, seed=shared["seed"]))


def test_a_missing_second_root_is_the_readers_own_error(trees):
    with pytest.raises(DatasetError, match="the official layout needs laf_root"):
        build_anomaly_set("fs_lost_and_found", trees["fs_laf"])
    with pytest.raises(DatasetError, match="the official layout needs cityscapes_root"):
        build_anomaly_set("fs_static", trees["fishyscapes"])
    with pytest.raises(ValueError, match="road_anomaly .*needs root"):
        build_anomaly_set("road_anomaly")


def test_an_unknown_name_lists_the_known_ones_and_how_to_add_one():
    with pytest.raises(ValueError) as error:
        build_anomaly_set("lost_and_found")
    message = str(error.value)
    assert "unknown anomaly set 'lost_and_found'" in message
    assert all(name in message for name in YAML_SETS)
    assert "conf/data/*.yaml" in message and "anomaly:" in message
    for call in (lambda: anomaly_set("lost_and_found", "x"), lambda: build_reader("nope", "x")):
        with pytest.raises(ValueError, match="conf/data/\\*.yaml"):
            call()


def test_check_reports_a_generated_set_frame_by_frame():
    report = data_cli._check_generated(
        "synthetic_anomaly", SyntheticScenes("anomaly", 2, 32, 64), True, lambda done, total: None
    )
    assert report.ok and report.n_images == 2 and report.resolutions == {(32, 64): 2}
    assert sum(report.pixels.values()) == 2 * 32 * 64 and report.pixels["anomaly"] > 0


# ------------------------------------------------------------------ another config tree
ROAD_ANOMALY_OFFICIAL = """
shared:
  road_root: ???
anomaly:
  road_anomaly_official:
    _target_: fsbench.data.anomaly_sets.RoadAnomaly
    root: ${...shared.road_root}
    layout: official
    label_map: {0: 0, 2: 1}
"""


def _tree(tmp_path: Path, **files: str) -> Path:
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    for name, text in files.items():
        (conf / "data" / f"{name}.yaml").write_text(text)
    return conf


def test_a_new_yaml_entry_is_a_new_set_for_every_command(tmp_path, monkeypatch, trees):
    conf = _tree(tmp_path, **{p.stem: p.read_text() for p in (CONF / "data").glob("*.yaml")})
    (conf / "data" / "road_official.yaml").write_text(ROAD_ANOMALY_OFFICIAL)
    entry = anomaly_sets(conf)["road_anomaly_official"]
    assert (entry.group, entry.params) == ("road_official", ("root", "layout", "label_map"))
    assert dict(entry.defaults) == {"layout": "official", "label_map": {0: 0, 2: 1}}
    built = build_anomaly_set("road_anomaly_official", trees["road_anomaly"], conf_root=conf)
    assert built.layout == "official"
    _same_frames(built, RoadAnomaly(trees["road_anomaly"]))
    monkeypatch.setattr(registry, "conf_dir", lambda: conf)
    assert set(yaml_sets(conf)) == set(anomaly_sets()) == set(YAML_SETS) | {entry.name}
    assert "road_anomaly_official" in _choices(data_cli._parser(), "check", "name")
    _same_frames(anomaly_set("road_anomaly_official", trees["road_anomaly"]), built)


def test_a_set_with_a_new_second_root_gets_a_check_option(tmp_path, monkeypatch):
    conf = _tree(
        tmp_path,
        laf=(
            "anomaly:\n  laf_elsewhere:\n"
            "    _target_: fsbench.data.anomaly_sets.FishyscapesLostAndFound\n"
            "    root: ???\n    laf_root: ???\n"
        ),
    )
    monkeypatch.setattr(registry, "conf_dir", lambda: conf)
    assert anomaly_sets()["laf_elsewhere"].roots == ("laf_root",)
    (option,) = [a for a in _check_parser()._actions if "--laf-root" in a.option_strings]
    assert option.help.startswith("laf_elsewhere: the Lost and Found root holding leftImg8bit/")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("anomaly:\n  broken: {root: x}\n", "anomaly.broken must be a mapping with _target_"),
        ("anomaly:\n  broken: {_target_: fsbench.data.Nope}\n", "cannot import fsbench.data.Nope"),
        ("anomaly: [a, b]\n", "must be a mapping"),
    ],
)
def test_a_malformed_entry_names_the_file(tmp_path, text, match):
    conf = _tree(tmp_path, bad=text)
    with pytest.raises(ValueError, match=match) as error:
        anomaly_sets(conf)
    assert "bad.yaml" in str(error.value)


def test_one_name_defined_differently_by_two_configs_is_refused(tmp_path):
    entry = "anomaly:\n  road:\n    _target_: fsbench.data.anomaly_sets.RoadAnomaly\n"
    conf = _tree(tmp_path, a=entry + "    layout: official\n", b=entry + "    layout: synboost\n")
    with pytest.raises(ValueError, match="'road' is defined differently by data/a.yaml and"):
        anomaly_sets(conf)
    same = _tree(tmp_path / "same", a=entry, b=entry)
    assert anomaly_sets(same)["road"].group == "a"


def test_a_data_config_without_anomaly_sets_adds_none(tmp_path):
    conf = _tree(tmp_path, cityscapes=(CONF / "data" / "cityscapes.yaml").read_text(), empty="")
    assert anomaly_sets(conf) == {}
