"""Feature metadata, definition versions, derived features and lineage.

References: derived values against the same numpy expression; altered groups against a
second store written directly with the new schema; metadata against what was set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmfs
from mmfs import lineage
from mmfs.errors import CorruptStoreError, NotFoundError, ParameterError
from mmfs.storage import fileformat as ff

T0 = np.datetime64("2026-01-01", "ns")
DAY = np.timedelta64(1, "D")
SCHEMA = {"clicks": mmfs.scalar("int64"), "views": mmfs.scalar("int64"), "c": mmfs.category()}


def ctr(clicks: np.ndarray, views: np.ndarray) -> np.ndarray:
    return np.where(views > 0, clicks / np.maximum(views, 1), np.nan)


def ctr_changed(clicks: np.ndarray, views: np.ndarray) -> np.ndarray:
    return np.where(views > 0, clicks / np.maximum(views, 1), 0.0)


@pytest.fixture(autouse=True)
def functions() -> Any:
    before = lineage._REGISTRY.copy()
    mmfs.register_function(ctr, version="3")
    yield
    lineage._REGISTRY.clear()
    lineage._REGISTRY.update(before)


def users(store: mmfs.Store, rng: np.random.Generator, n: int = 50) -> dict[str, Any]:
    g = store.create_group("users", key="uid", schema=SCHEMA)
    data = {
        "clicks": rng.integers(0, 20, n),
        "views": rng.integers(0, 40, n),
        "c": [f"k{i % 4}" if i % 5 else None for i in range(n)],
    }
    g.write(np.arange(n), data, event_time=T0 + rng.integers(0, 5, n) * DAY)
    return data


# --------------------------------------------------------------------------- functions


def test_register_function_forms_and_errors() -> None:
    @mmfs.register_function
    def plain(x: np.ndarray) -> np.ndarray:
        return x

    @mmfs.register_function(name="renamed", version="7")
    def other(x: np.ndarray) -> np.ndarray:
        return x + 1

    reg = mmfs.registered_functions()
    assert reg["plain"].version == "1"
    assert reg["renamed"].fn is other
    assert reg["renamed"].version == "7"
    assert lineage.function(other).name == "renamed"
    with pytest.raises(ParameterError, match="name the function"):
        mmfs.register_function(lambda x: x)
    with pytest.raises(ParameterError, match="version"):
        mmfs.register_function(plain, version="")
    with pytest.raises(ParameterError, match="needs a function"):
        mmfs.register_function(3)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="no code"):
        lineage.fingerprint(len)
    with pytest.raises(NotFoundError, match="no registered function"):
        lineage.function("nope")


def test_fingerprint_follows_the_code_not_the_name() -> None:
    assert lineage.fingerprint(ctr) == lineage.fingerprint(ctr)
    assert lineage.fingerprint(ctr) != lineage.fingerprint(ctr_changed)

    def nested(x: np.ndarray) -> Any:
        return [v * 2 for v in x]

    def nested_changed(x: np.ndarray) -> Any:
        return [v * 3 for v in x]

    assert lineage.fingerprint(nested) != lineage.fingerprint(nested_changed)


# --------------------------------------------------------------------------- derive


def test_derive_writes_values_and_records_lineage(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with mmfs.open(tmp_path / "s", durability="none") as store:
        data = users(store, rng)
        v1 = store.commit()
        assert store.derive("stats.ctr", "ctr", ["users.clicks", "users.views"]) == 50
        store.annotate("stats.ctr", description="click-through", owner="ads", tags=["r", "r"])
        store.commit()
        got = store["stats"].get(np.arange(50))
        np.testing.assert_array_equal(got["ctr"], ctr(data["clicks"], data["views"]))
        np.testing.assert_array_equal(got.event_time, store["users"].get(np.arange(50)).event_time)
        d = store.describe("stats.ctr")
        assert (d["description"], d["owner"], d["tags"]) == ("click-through", "ads", ["r"])
        assert d["derived"] == {
            "function": "ctr",
            "function_version": "3",
            "fingerprint": lineage.fingerprint(ctr),
            "sources": [f"users.clicks@{v1}", f"users.views@{v1}"],
            "inputs": ["users.clicks", "users.views"],
        }
        # a feature derived from a derived one: the graph is transitive
        mmfs.register_function(lambda x: x * 100, name="pct")
        store.derive("pct.ctr_pct", "pct", ["stats.ctr"])
        v3 = store.commit()
        graph = store.lineage("pct.ctr_pct")
        assert graph["feature"] == "pct.ctr_pct"
        assert sorted(graph["edges"]) == sorted(
            [
                [f"stats.ctr@{v3 - 1}", "pct.ctr_pct"],
                [f"users.clicks@{v1}", f"stats.ctr@{v3 - 1}"],
                [f"users.views@{v1}", f"stats.ctr@{v3 - 1}"],
            ]
        )
        assert graph["nodes"][f"users.clicks@{v1}"]["derived"] is None
        mmfs.register_function(lambda a, b: a - b, name="zero")
        store.derive("z.zero", "zero", ["stats.ctr", "stats.ctr"])  # one source twice
        store.commit()
        graph = store.lineage("z.zero")
        assert len(graph["edges"]) == 4  # z <- ctr (twice), ctr <- clicks, views
        assert len(graph["nodes"]) == 4
    with mmfs.open(tmp_path / "s", mode="r") as reader:  # metadata is in the manifest
        assert reader.describe("stats.ctr")["derived"]["function"] == "ctr"
        assert reader.lineage("stats.ctr")["edges"]


def test_derive_into_an_existing_group_and_at_a_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with mmfs.open(tmp_path / "s", durability="none") as store:
        data = users(store, rng)
        v1 = store.commit()
        store["users"].write([0], {"clicks": [999], "views": [1], "c": ["x"]}, event_time=T0)
        store.commit()
        store.create_group("stats", key="uid", schema={"ctr": mmfs.scalar("float64")})
        store.commit()
        store.derive("stats.ctr", ctr, ["users.clicks", "users.views"], version=v1)
        store.commit()
        np.testing.assert_array_equal(
            store["stats"].get(np.arange(50))["ctr"], ctr(data["clicks"], data["views"])
        )
        mmfs.register_function(lambda x: np.stack([x, x], axis=1), name="twice")
        store.derive("stats2.pair", "twice", ["users.views"])  # a dense target
        store.commit()
        assert store["stats2"].schema["pair"] == mmfs.dense(2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.derive("stats.x", "ctr", []), "non-empty"),
        (lambda s: s.derive("stats.x", "ctr", "users.clicks"), "non-empty"),
        (lambda s: s.derive("stats.x", "ctr", ["users.clicks", "other.y"]), "one group"),
        (lambda s: s.derive("users.clicks", "ctr", ["users.clicks"]), "itself"),
        (lambda s: s.derive("stats.x", "nope", ["users.clicks"]), "no registered"),
        (lambda s: s.derive("stats.x", "bad_shape", ["users.clicks"]), "shape"),
        (lambda s: s.derive("stats.x", "bad_dtype", ["users.clicks"]), "numeric"),
        (lambda s: s.derive("users.x", "ctr", ["users.clicks", "users.views"]), "other features"),
        (lambda s: s.derive("statsx", "ctr", ["users.clicks"]), "group.feature"),
    ],
)
def test_derive_refuses_bad_input(tmp_path: Path, call: Any, match: str) -> None:
    mmfs.register_function(lambda x: x[:2], name="bad_shape")
    mmfs.register_function(lambda x: x.astype(str), name="bad_dtype")
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(3))
        store.create_group("other", schema={"y": mmfs.scalar("float32")})
        store.commit()
        with pytest.raises((ParameterError, NotFoundError), match=match):
            call(store)


def test_derived_bool_int_and_float32_types(tmp_path: Path) -> None:
    mmfs.register_function(lambda x: x > 5, name="big")
    mmfs.register_function(lambda x: x * 2, name="double")
    mmfs.register_function(lambda x: x.astype(np.float32), name="f32")
    with mmfs.open(tmp_path / "s", durability="none") as store:
        data = users(store, np.random.default_rng(4))
        store.commit()
        for name, fn, want in [
            ("b", "big", mmfs.scalar("bool")),
            ("i", "double", mmfs.scalar("int64")),
            ("f", "f32", mmfs.scalar("float32")),
        ]:
            store.derive(f"d_{name}.v", fn, ["users.clicks"])
            store.commit()
            assert store[f"d_{name}"].schema["v"] == want
        np.testing.assert_array_equal(store["d_b"].get(np.arange(50))["v"], data["clicks"] > 5)


# --------------------------------------------------------------------------- describe


def test_describe_a_feature_and_read_counts(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(5))
        v1 = store.commit()
        g = store["users"]
        g.get(np.arange(10), ["clicks"])
        g.get(3, ["clicks", "views"])
        g.get(np.arange(4), version=v1)
        store.refresh()
        g.get(np.arange(7), ["clicks"])
        counts = store.read_counts("users")
        assert counts["clicks"] == {"calls": 4, "keys": 22}
        assert counts["views"] == {"calls": 2, "keys": 5}
        assert counts["c"] == {"calls": 1, "keys": 4}
        d = store.describe("users.clicks")
        assert d["type"] == {"type": "scalar", "dtype": "int64"}
        assert d["reads"] == {"calls": 4, "keys": 22}
        assert d["definition"] == 1
        assert d["last_written"] is not None
        assert store.describe(f"users.clicks@{v1}")["feature"] == f"users.clicks@{v1}"
        with pytest.raises(NotFoundError, match="no feature"):
            store.describe("users.nope")
        with pytest.raises(ParameterError, match="@<id>"):
            store.describe("users.clicks@latest")
        with pytest.raises(ParameterError, match=r"group\.feature"):
            store.describe("a.b.c")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"description": 3}, "description"),
        ({"owner": b"x"}, "owner"),
        ({"tags": "one"}, "tags"),
        ({"tags": [1]}, "tags"),
    ],
)
def test_annotate_refuses_bad_values(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(6))
        with pytest.raises(ParameterError, match=match):
            store.annotate("users.clicks", **kw)
        with pytest.raises(NotFoundError):
            store.annotate("users.nope", owner="x")
        assert store.describe("users.clicks")["owner"] == ""


# --------------------------------------------------------------------------- alter


def test_alter_group_versions_the_definition(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    with mmfs.open(tmp_path / "s", durability="none") as store:
        data = users(store, rng)
        store["users"].write([0, 1], {"clicks": [7, 8], "views": [1, 2], "c": ["a", "b"]},
                             event_time=T0 + 9 * DAY)  # fmt: skip
        v1 = store.commit()
        before = {k: store["users"].get(np.arange(50), as_of=T0 + k * DAY) for k in range(10)}
        g = store.alter_group(
            "users",
            add={"score": mmfs.scalar("float32"), "tag": mmfs.category()},
            drop=["c"],
            retype={"clicks": mmfs.scalar("float64")},
        )
        v2 = store.commit()
        assert g.features == ["clicks", "views", "score", "tag"]
        assert store.describe("users")["definition"] == 2
        assert store.describe("users.score")["definition"] == 2
        assert store.describe("users.views")["definition"] == 1  # kept as it was
        for k in range(10):  # every row kept, with its event time: as-of reads agree
            now = g.get(np.arange(50), as_of=T0 + k * DAY)
            np.testing.assert_array_equal(now.mask, before[k].mask)
            found = ~now.mask
            np.testing.assert_array_equal(
                now["clicks"][found], before[k]["clicks"][found].astype(float)
            )
            assert np.isnan(now["clicks"][~found]).all()  # float64 now: missing is NaN
            np.testing.assert_array_equal(now["views"], before[k]["views"])
            assert np.isnan(now["score"]).all()
            assert set(now["tag"].tolist()) == {None}
        old = store.group("users", version=v1)  # the old definition, at the old version
        assert old.features == ["clicks", "views", "c"]
        assert old.get(np.arange(50))["c"].tolist()[2:] == data["c"][2:]
        assert store["users"].get([0], version=v2)["clicks"].dtype == np.float64
        assert store.verify()["users"] == 50


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"drop": ["nope"]}, "no feature"),
        ({"retype": {"nope": mmfs.scalar("int64")}}, "no feature"),
        ({"add": {"views": mmfs.scalar("int64")}}, "already has"),
        ({"drop": "c", "retype": {"c": mmfs.scalar("int64")}}, "both"),
        ({"add": {"uid": mmfs.scalar("int64")}}, "key"),
        ({"drop": ["clicks", "views", "c"]}, "non-empty"),
        ({"retype": {"c": mmfs.scalar("int64")}}, "c"),  # str values do not fit int64
    ],
)
def test_alter_group_refuses_and_leaves_the_group(
    tmp_path: Path, kw: dict[str, Any], match: str
) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(8))
        store.commit()
        groups_before = sorted((tmp_path / "s" / "groups").iterdir())
        with pytest.raises(mmfs.MmfsError, match=match):
            store.alter_group("users", **kw)
        assert sorted((tmp_path / "s" / "groups").iterdir()) == groups_before
        assert store["users"].features == ["clicks", "views", "c"]
        store["users"].write([1], {"clicks": [1], "views": [1], "c": ["z"]})
        store.commit()
        assert store["users"].get(1)["c"].tolist() == ["z"]


def test_alter_group_needs_committed_writes_and_works_on_an_empty_group(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(9))
        with pytest.raises(ParameterError, match="uncommitted"):
            store.alter_group("users", drop=["c"])
        store.rollback()
        g = store.create_group("empty", schema={"x": mmfs.scalar("float32")})
        g = store.alter_group("empty", add={"y": mmfs.dense(3)})
        g.write([1], {"x": [1.0], "y": [[1, 2, 3]]})
        store.commit()
        assert store["empty"].get(1)["y"].tolist() == [[1.0, 2.0, 3.0]]


def test_alter_fills_every_new_type_with_its_missing_value(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        g = store.create_group("g", key="k", key_type="str", schema={"x": mmfs.scalar("float32")})
        g.write(["a", "b"], {"x": [1.0, 2.0]})
        store.commit()
        add = {
            "i": mmfs.scalar("int64"), "b": mmfs.scalar("bool"), "d": mmfs.dense(2),
            "q": mmfs.dense(2, "int8"), "m": mmfs.dense(3, "bool"), "s": mmfs.sparse(5),
            "f64": mmfs.scalar("float64"),
        }  # fmt: skip
        g = store.alter_group("g", add=add)
        store.commit()
        got = g.get(["a", "b"])
        assert got["i"].tolist() == [0, 0]
        assert got["b"].tolist() == [False, False]
        assert np.isnan(got["d"]).all()
        assert np.isnan(got["f64"]).all()
        np.testing.assert_array_equal(got["q"], 0.0)
        assert not got["m"].any()
        assert got["s"].nnz == 0
        assert got["x"].tolist() == [1.0, 2.0]


# --------------------------------------------------------------------------- manifests


def _edit_manifest(path: Path, edit: Any) -> None:
    latest = max(path.glob("manifest-*.mmfs"))
    doc = ff.read_json_file(latest, "MNFT")
    edit(doc["groups"]["users"])
    latest.unlink()
    ff.write_json_file(latest, doc, "MNFT", durable=False)


@pytest.mark.parametrize(
    "edit",
    [
        lambda g: g.pop("info"),
        lambda g: g["info"].pop("c"),
        lambda g: g["info"]["c"].pop("owner"),
        lambda g: g["info"]["c"].update(created_ns=-1),
        lambda g: g["info"]["c"].update(definition="1"),
        lambda g: g["info"]["c"].update(description=None),
        lambda g: g["info"]["c"].update(tags=[1]),
        lambda g: g["info"]["c"].update(derived={"function": "f"}),
        lambda g: g["info"]["c"].update(derived=[]),
        lambda g: g.update(definition=-2),
        lambda g: g.update(history=[[1, 0]]),
    ],
)
def test_damaged_metadata_is_refused(tmp_path: Path, edit: Any) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(10))
        store.commit()
    _edit_manifest(tmp_path / "s", edit)
    with pytest.raises(CorruptStoreError):
        mmfs.open(tmp_path / "s", mode="r")


@pytest.mark.parametrize(
    "edit",
    [
        lambda doc: doc.update(tags="t"),
        lambda doc: doc.update(retired={"a": 1}),
        lambda doc: doc.update(retired=[["users", doc["groups"]["users"]]]),  # id twice
    ],
)
def test_damaged_manifest_fields_are_refused(tmp_path: Path, edit: Any) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(12))
        store.commit()
    latest = max((tmp_path / "s").glob("manifest-*.mmfs"))
    doc = ff.read_json_file(latest, "MNFT")
    edit(doc)
    latest.unlink()
    ff.write_json_file(latest, doc, "MNFT", durable=False)
    with pytest.raises(CorruptStoreError):
        mmfs.open(tmp_path / "s", mode="r")


def test_metadata_round_trips_through_json(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        users(store, np.random.default_rng(11))
        store.annotate("users.c", description="colour", owner="me", tags=["pii"])
        store.commit()
    latest = max((tmp_path / "s").glob("manifest-*.mmfs"))
    doc = ff.read_json_file(latest, "MNFT")
    info = doc["groups"]["users"]["info"]["c"]
    assert (info["description"], info["owner"], info["tags"]) == ("colour", "me", ["pii"])
    assert json.loads(json.dumps(info)) == info
