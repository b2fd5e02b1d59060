"""Experiments in a store (docs/experiments.md): definitions, validation, versions,
layers and nesting, serving variants through ``group.get(experiment=)``, exposure logs.

The reference for assignment is a numpy computation from the hash functions (whose
agreement with mmh3 is tested in test_assign_kernel.py and test_experiments_stats.py);
the reference for a served batch is plain ``get`` calls, one per arm configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mmfs
from mmfs import transforms as T
from mmfs.errors import (
    CorruptStoreError,
    DuplicateSeedError,
    ExperimentError,
    LayerFullError,
    LayerOverlapError,
    NestingCycleError,
    NotFoundError,
    ParameterError,
    ReadOnlyError,
    TransformError,
    WeightsError,
)
from mmfs.experiments import slots, to_frame

KEYS = np.arange(20_000, dtype=np.int64)


def _reference(e: mmfs.experiments.Experiment, keys: Any) -> np.ndarray:
    """Arm codes from the slot functions and the definition's two tables."""
    d = e._def
    dom_salt = e._state.layers[d.layer].salt if d.layer else d.domain_salt
    dom = d.domain_table()[slots(keys, dom_salt)].astype(bool)
    arm = d.arm_table()[slots(keys, d.arm_salt)]
    return np.where(dom, arm, -1).astype(np.int16)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with mmfs.open(tmp_path / "s") as s:
        yield s


# -- definitions ------------------------------------------------------------------------------


def test_assign_equals_the_slot_reference_for_every_key_form(store: Any) -> None:
    e = store.experiments.create("e", {"c": 30, "t1": 30.5, "t2": 39.5}, coverage=0.65)
    assert e.weights == {"c": 30.0, "t1": 30.5, "t2": 39.5}
    assert e.coverage == 0.65
    codes = e.assign(KEYS)
    assert codes.dtype == np.int16
    assert np.array_equal(codes, _reference(e, KEYS))
    strs = np.array([f"user-{i}" for i in range(5000)])
    want = _reference(e, strs)
    assert np.array_equal(e.assign(strs), want)
    assert np.array_equal(e.assign(strs.tolist()), want)
    assert np.array_equal(e.assign(strs.astype(object)), want)
    assert e.assign(7).tolist() == e.assign([7]).tolist() == [codes[7]]
    for nt in (1, 2, 4):
        assert np.array_equal(
            e.assign(np.arange(300_000), n_threads=nt), e.assign(np.arange(300_000))
        )
    assert e.assign(np.zeros(0, np.int64)).shape == (0,)
    names = e.arm_names(codes[:5])
    assert names.tolist() == [None if c < 0 else e.variants[c] for c in codes[:5]]


def test_assignment_is_the_same_in_another_process(store: Any, tmp_path: Path) -> None:
    e = store.experiments.create("e", ["a", "b", "c", "d"], coverage=0.9, seed="s-1")
    store.commit("exp")
    code = (
        "import mmfs, numpy as np, sys\n"
        f"s = mmfs.open({str(tmp_path / 's')!r}, mode='r')\n"
        "codes = s.experiments.get('e').assign(np.arange(2000))\n"
        "sys.stdout.write(','.join(map(str, codes.tolist())))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == ",".join(map(str, e.assign(np.arange(2000)).tolist()))


def test_weights_are_checked(store: Any) -> None:
    cat = store.experiments
    for bad in ({"a": 50, "b": 49}, {"a": 50.001, "b": 49.999}, {"a": -10, "b": 110},
                {"a": True, "b": 99}, {"a": float("nan"), "b": 50}, {}, ["a", "b", "c"], "ab",
                {"a": "50", "b": 50}):  # fmt: skip
        with pytest.raises(WeightsError):
            cat.create("e", bad)
    with pytest.raises(WeightsError, match="distinct"):
        cat.create("e", ["a", "a"])
    assert cat.list() == []  # nothing was created
    e = cat.create("e", ["a", "b", "c", "d", "e"])
    assert e.weights == dict.fromkeys("abcde", 20.0)


def test_other_arguments_are_checked(store: Any) -> None:
    cat = store.experiments
    with pytest.raises(ParameterError):
        cat.create("1bad", ["a", "b"])
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], hashing="md5")
    with pytest.raises(ExperimentError):
        cat.create("e", ["a", "b"], coverage=1.5)
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], coverage="all")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        cat.create("e", ["a", "b"], layer="nope")
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], layer_range=(0, 10))
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], namespace=("n", 0, 0.5))
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], hashing="growthbook", layer="x")
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], hashing="growthbook", namespace=("n", 0.5, 0.5))
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], hashing="growthbook", namespace="n")  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], seed="")
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], parent="no-colon")
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], serve={"zz": {}})
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], serve={"a": {"bogus": 1}})
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], serve={"a": {"features": {"x": 1}}})
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], serve={"a": {"version": 1.5}})
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], serve=[1])  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        cat.create("e", ["a", "b"], unit=3)  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="parent experiment"):
        cat.create("e", ["a", "b"], parent="ghost:a")
    cat.create("e", ["a", "b"])
    with pytest.raises(ExperimentError, match="already exists"):
        cat.create("e", ["a", "b"])
    with pytest.raises(ExperimentError, match="no variant"):
        cat.create("f", ["a", "b"], parent="e:zz")
    with pytest.raises(NotFoundError):
        cat.get("ghost")
    with pytest.raises(NotFoundError):
        cat.update("ghost", coverage=0.5)
    assert cat.list() == ["e"]


def test_duplicate_seeds_are_refused(store: Any) -> None:
    cat = store.experiments
    cat.create("a", ["x", "y"], seed="shared")
    with pytest.raises(DuplicateSeedError):
        cat.create("b", ["x", "y"], seed="shared")
    cat.create_layer("L", seed="layer-seed")
    with pytest.raises(DuplicateSeedError):
        cat.create("c", ["x", "y"], seed="layer-seed")
    with pytest.raises(DuplicateSeedError):
        cat.create_layer("M", seed="shared")
    cat.restart("a", seed="shared-2")
    with pytest.raises(DuplicateSeedError):  # an old phase's seed stays taken
        cat.create("d", ["x", "y"], seed="shared")
    assert cat.list() == ["a"]
    assert list(cat.layers()) == ["L"]


def test_layers_exclusion_holdout_capacity_and_ranges(store: Any) -> None:
    cat = store.experiments
    info = cat.create_layer("L", holdout=0.2, description="checkout page")
    assert info["holdout"] == 0.2
    assert info["free"] == 0.8
    a = cat.create("a", ["c", "t"], layer="L", coverage=0.5)
    with pytest.raises(LayerFullError, match="30%"):
        cat.create("b", ["c", "t"], layer="L", coverage=0.4)
    b = cat.create("b", ["c", "t"], layer="L", coverage=0.3)
    with pytest.raises(LayerFullError):
        cat.update("a", coverage=0.51)
    down = cat.update("a", coverage=0.25).assign(KEYS)  # a layer ramp down drops, moves none
    assert np.array_equal(down[down >= 0], a.assign(KEYS)[down >= 0])
    assert abs(np.mean(down >= 0) - 0.25) < 0.01
    a = cat.update("a", coverage=0.5)
    with pytest.raises(ExperimentError, match="already exists"):
        cat.create_layer("L")
    codes_a, codes_b = a.assign(KEYS), b.assign(KEYS)
    assert not np.any((codes_a >= 0) & (codes_b >= 0))
    assert np.array_equal(codes_a, _reference(a, KEYS))
    layers = cat.layers()
    assert layers["L"]["experiments"] == {"a": 0.5, "b": 0.3}
    assert layers["L"]["free"] == 0
    # stopping frees its share
    cat.stop("b", reason="done")
    assert cat.layers()["L"]["free"] == pytest.approx(0.3)
    assert (cat.get("b").assign(KEYS) == -1).all()
    with pytest.raises(ExperimentError, match="stopped"):
        cat.update("b", coverage=0.1)
    # explicit slot ranges
    cat.create_layer("R")
    cat.create("r1", ["c", "t"], layer="R", layer_range=(0, 40))
    with pytest.raises(LayerOverlapError):
        cat.create("r2", ["c", "t"], layer="R", layer_range=(30, 60))
    with pytest.raises(LayerOverlapError, match="holdout"):
        cat.create("r3", ["c", "t"], layer="L", layer_range=(85, 90))
    for bad in ((10, 5), (0,), "0-10"):
        with pytest.raises(ParameterError):
            cat.create("r4", ["c", "t"], layer="R", layer_range=bad)  # type: ignore[arg-type]
    r2 = cat.create("r2", ["c", "t"], layer="R", layer_range=(40, 60))
    assert r2.coverage == 0.2


def test_growthbook_namespaces_must_not_overlap(store: Any) -> None:
    cat = store.experiments
    cat.create("g1", ["a", "b"], hashing="growthbook", namespace=("ns", 0, 0.5))
    with pytest.raises(LayerOverlapError):
        cat.create("g2", ["a", "b"], hashing="growthbook", namespace=("ns", 0.4, 1))
    cat.create("g2", ["a", "b"], hashing="growthbook", namespace=("ns", 0.5, 1))


def test_nesting_in_an_arm_and_cycles(store: Any) -> None:
    cat = store.experiments
    parent = cat.create("parent", {"control": 50, "new_ui": 50})
    child = cat.create("child", ["a", "b"], parent="parent:new_ui")
    pc, cc = parent.assign(KEYS), cat.get("child").assign(KEYS)
    assert child.parent == ("parent", "new_ui")
    assert np.all(cc[pc != 1] == -1)
    inside = pc == 1
    free_child = _reference(child, KEYS)
    assert np.array_equal(cc[inside], free_child[inside])
    # a layer inside an arm: its experiments only see that arm's keys
    cat.create_layer("inner", parent=("parent", "control"))
    x = cat.create("x", ["a", "b"], layer="inner", coverage=0.5)
    xc = x.assign(KEYS)
    assert np.all(xc[pc != 0] == -1)
    assert abs(np.mean(xc[pc == 0] >= 0) - 0.5) < 0.03
    # a cycle: moving the parent into the layer that lives inside its own arm
    with pytest.raises(NestingCycleError, match="cycle"):
        cat.restart("parent", layer="inner", coverage=0.3)
    with pytest.raises(NestingCycleError):
        cat.restart("child", parent="child:a")
    assert cat.get("parent").phase == 0  # refused changes left nothing behind


def test_update_restart_and_history(store: Any) -> None:
    cat = store.experiments
    e = cat.create("e", {"c": 50, "t": 50}, coverage=0.5, description="d0")
    before = e.assign(KEYS)
    e2 = cat.update("e", coverage=0.7, variants={"c": 40, "t": 60}, description="d1",
                    log_exposures=True, serve={"t": {"features": {"x": "y"}}})  # fmt: skip
    assert e2.log_exposures
    assert e2.serve == {"t": {"features": {"x": "y"}}}
    assert e2.phase == 0
    assert e2.checksum != e.checksum
    with pytest.raises(ExperimentError, match="restart"):
        cat.update("e", variants={"c": 40, "u": 60})
    e3 = cat.restart("e", reason="bug in t", variants={"c": 50, "u": 50})
    assert e3.phase == 1
    assert e3.variants == ("c", "u")
    assert e3.serve == {}
    after = e3.assign(KEYS)
    # a new phase re-randomises: about half of the keys in both phases change arm
    both = (before >= 0) & (after >= 0)
    assert 0.4 < np.mean(before[both] != after[both]) < 0.6
    changes = [h["change"] for h in e3.history]
    assert changes == ["created", "coverage", "weights", "serve", "log_exposures",
                       "description", "restart"]  # fmt: skip
    assert e3.history[-1]["reason"] == "bug in t"
    assert e3.history[-1]["phase"] == 1
    d = e3.describe()
    assert d["phase"] == 1
    assert d["hash_version"] == "murmur3_x86_32/v1"
    assert d["coverage"] == 0.7
    assert "phase=1" in repr(e3)
    s = cat.restart("e", coverage=0.1, serve={"u": {"version": 0}})
    assert s.coverage == 0.1
    assert s.serve == {"u": {"version": 0}}
    cat.stop("e")
    r = cat.restart("e")
    assert r.status == "running"
    assert r.phase == 3


# -- versions ------------------------------------------------------------------------------


def test_experiments_are_versioned_with_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with mmfs.open(path) as store:
        cat = store.experiments
        cat.create("e", ["a", "b"], coverage=0.2)
        assert "e" in cat
        assert cat.served_state(None).experiments == {}
        v1 = store.commit("start e")
        cat.update("e", coverage=0.6)
        cat.create("f", ["a", "b"])
        store.rollback()  # forgets the staged changes
        assert cat.get("e").coverage == 0.2
        assert cat.list() == ["e"]
        cat.update("e", coverage=0.6)
        v2 = store.commit("ramp e", tags=["ramp"])
        assert cat.get("e", version=v1).coverage == 0.2
        assert cat.get("e", version="ramp").coverage == 0.6
        assert cat.list(version=0) == []
        with pytest.raises(NotFoundError, match="version"):
            cat.get("e", version=0)
        old = cat.get("e", version=v1).assign(KEYS)
    with mmfs.open(path, mode="r") as reader:
        cat = reader.experiments
        assert cat.get("e").coverage == 0.6
        assert list(cat) == ["e"]
        assert np.array_equal(cat.get("e", version=v1).assign(KEYS), old)
        with pytest.raises(ReadOnlyError):
            cat.create("g", ["a", "b"])
        assert cat.layers(version=v2) == {}


def test_a_damaged_experiments_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with mmfs.open(path) as store:
        store.experiments.create_layer("L")
        store.experiments.create("e", ["a", "b"], layer="L", coverage=0.5)
        store.commit()
    from mmfs.storage.fileformat import read_json_file, write_json_file

    manifest = path / "manifest-000000000001.mmfs"
    good = read_json_file(str(manifest), "MNFT")
    edits = [
        lambda d: d["experiments"].__setitem__("experiments", []),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("hashing", "md5"),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("variants", [["a", 10]]),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("arms", [[0, 10, 0]]),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("domain", [[5, 2]]),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("layer", "ghost"),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("status", "paused"),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("serve", {"zz": {}}),
        lambda d: d["experiments"]["experiments"]["e"].__setitem__("parent", ["e"]),
        lambda d: d["experiments"]["layers"]["L"].__setitem__("holdout", [[0, 6000]]),
        lambda d: d["experiments"]["layers"]["L"].__setitem__("seed", 3),
    ]
    for edit in edits:
        doc = json.loads(json.dumps(good))
        edit(doc)
        write_json_file(str(manifest), doc, "MNFT")
        with pytest.raises(CorruptStoreError, match="experiments"):
            mmfs.open(path, mode="r")
    write_json_file(str(manifest), good, "MNFT")
    with mmfs.open(path, mode="r") as s:
        assert s.experiments.list() == ["e"]


# -- serving variants ---------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """A group with an embedding and an alternative one, two scalars, a scaler fitted
    twice; an experiment whose treatment reads the alternative embedding."""
    rng = np.random.default_rng(5)
    n = 3000
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("users", key="user_id", schema={
            "emb": mmfs.dense(16), "emb_v2": mmfs.dense(16), "age": mmfs.scalar("float32"),
            "score": mmfs.scalar("float64"), "city": mmfs.category()})  # fmt: skip
        keys = np.arange(n, dtype=np.int64) * 3
        cities = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
        values = {"emb": rng.normal(size=(n, 16)).astype(np.float32),
                  "emb_v2": rng.normal(size=(n, 16)).astype(np.float32),
                  "age": rng.uniform(18, 80, n).astype(np.float32),
                  "score": rng.normal(size=n), "city": cities}  # fmt: skip
        g.write(keys, values, event_time=np.datetime64("2026-01-01"))
        v1 = store.commit("load")
        store.transforms.fit("scale", "users", ["age"], T.StandardScaler())
        store.transforms.fit("scale", "users", ["age"], T.MinMaxScaler(), pin=False)
        later = {f: v[:100] for f, v in values.items()}
        later["age"] = np.full(100, 99, np.float32)
        g.write(keys[:100], later, event_time=np.datetime64("2026-02-01"))
        store.commit("later")
        store.experiments.create(
            "emb_test", {"control": 50, "treatment": 50}, unit="user_id",
            serve={"treatment": {"features": {"emb": "emb_v2"}}},
        )  # fmt: skip
        store.experiments.create("tf_test", ["a", "b"],
                                 serve={"b": {"transforms": {"scale": "scale@2"}}})  # fmt: skip
        store.transforms.fit("scale", "users", ["age"], T.MinMaxScaler(clip=True), pin=False)
        store.experiments.create(  # other affine flags (clip): no merged plan, one read per arm
            "tf_clip", ["a", "b"], serve={"b": {"transforms": {"scale": "scale@3"}}}
        )
        store.experiments.create("old_test", ["a", "b"], serve={"b": {"version": v1}})
        store.experiments.create("plain", ["a", "b"], coverage=0.5)
        store.commit("experiments")
        yield store, g, keys, v1


def test_get_serves_each_arm_its_alternative_feature(served: Any) -> None:
    store, g, keys, _ = served
    req = np.concatenate([keys[::-7], [1, 2, keys[5]]])  # unsorted, missing, duplicate
    batch = g.get(req, ["age", "emb", "city"], experiment="emb_test")
    codes = store.experiments.get("emb_test").assign(req)
    assert np.array_equal(batch.arms, codes)
    assert batch.variants == ("control", "treatment")
    plain = g.get(req, ["age", "emb", "city"])
    alt = g.get(req, ["age", "emb_v2", "city"])
    t = codes == 1
    assert t.any()
    assert (~t).any()
    np.testing.assert_array_equal(batch["emb"][t], alt["emb_v2"][t])
    np.testing.assert_array_equal(batch["emb"][~t], plain["emb"][~t])
    np.testing.assert_array_equal(batch["age"], plain["age"])
    assert batch["city"].tolist() == plain["city"].tolist()
    np.testing.assert_array_equal(batch.mask, plain.mask)
    np.testing.assert_array_equal(batch.event_time, plain.event_time)
    assert batch.to_numpy().shape == (len(req), 18)
    with pytest.raises(NotFoundError):
        g.get(req, ["emb"], experiment="emb_test", missing="raise")
    # all features (None) swaps too; one key; out=
    full = g.get(req[:10], experiment="emb_test")
    np.testing.assert_array_equal(full["emb"][t[:10]], alt["emb_v2"][:10][t[:10]])
    one = g.get(int(req[0]), ["emb"], experiment="emb_test")
    np.testing.assert_array_equal(one["emb"][0], batch["emb"][0])
    buf = np.empty((len(req), 16), np.float32)
    b2 = g.get(req, ["emb"], experiment="emb_test", out=buf)
    np.testing.assert_array_equal(b2["emb"], batch["emb"])
    assert np.shares_memory(b2.to_numpy(), buf)


def test_get_serves_transform_versions_and_store_versions(served: Any) -> None:
    store, g, keys, v1 = served
    req = keys[:400]
    b = g.get(req, ["score"], transform="scale", experiment="tf_test")
    codes = b.arms
    assert codes is not None
    ref1 = g.get(req, ["score"], transform="scale@1")["age:scale"]
    ref2 = g.get(req, ["score"], transform="scale@2")["age:scale"]
    np.testing.assert_array_equal(b["age:scale"][codes == 1], ref2[codes == 1])
    np.testing.assert_array_equal(b["age:scale"][codes == 0], ref1[codes == 0])
    c = g.get(req, ["score"], transform="scale", experiment="tf_clip")
    cc = c.arms
    assert cc is not None
    ref3 = g.get(req, ["score"], transform="scale@3")["age:scale"]
    np.testing.assert_array_equal(c["age:scale"][cc == 1], ref3[cc == 1])
    np.testing.assert_array_equal(c["age:scale"][cc == 0], ref1[cc == 0])
    np.testing.assert_array_equal(c["score"], b["score"])
    old = g.get(req, ["age"], experiment="old_test")
    want_old = g.get(req, ["age"], version=v1)["age"]
    want_new = g.get(req, ["age"])["age"]
    oc = old.arms
    assert oc is not None
    assert (oc == 1).any()
    np.testing.assert_array_equal(old["age"][oc == 1], want_old[oc == 1])
    np.testing.assert_array_equal(old["age"][oc == 0], want_new[oc == 0])
    # as_of combines with variants
    t = np.datetime64("2026-01-15")
    asof = g.get(req, ["age", "emb"], experiment="emb_test", as_of=t)
    np.testing.assert_array_equal(asof["age"], g.get(req, ["age"], as_of=t)["age"])
    # pinned to a version, the arms are that version's and read their own versions
    now = store.generation
    vers = g.get(req, ["age"], experiment="old_test", version=now)
    np.testing.assert_array_equal(vers["age"], old["age"])
    # an arm may not serve a version newer than the one read
    store.experiments.create("future", ["a", "b"], serve={"b": {"version": now + 2}})
    store.commit()
    store.commit()
    with pytest.raises(ParameterError, match="newer"):
        g.get(req, ["age"], experiment="future", version=now + 1)


def test_get_without_arm_configuration_is_a_plain_get(served: Any) -> None:
    _store, g, keys, _ = served
    b = g.get(keys[:500], ["age", "emb"], experiment="plain")
    p = g.get(keys[:500], ["age", "emb"])
    np.testing.assert_array_equal(b.to_numpy(), p.to_numpy())
    assert b.arms is not None
    assert (b.arms == -1).any()
    assert p.arms is None
    assert p.variants == ()


def test_get_with_an_experiment_checks_its_arguments(served: Any, tmp_path: Path) -> None:
    store, g, keys, _ = served
    with pytest.raises(NotFoundError, match="committed"):
        g.get(keys[:5], experiment="ghost")
    store.experiments.create("wrong_unit", ["a", "b"], unit="item_id")
    store.experiments.create("bad_type", ["a", "b"], serve={"b": {"features": {"emb": "age"}}})
    store.experiments.create("bad_tf", ["a", "b"], serve={"b": {"features": {"city": "emb"}}})
    store.commit()
    with pytest.raises(ParameterError, match="item_id"):
        g.get(keys[:5], experiment="wrong_unit")
    with pytest.raises(ParameterError, match="type"):
        g.get(keys[:50], ["emb"], experiment="bad_type")
    with pytest.raises(ParameterError, match="type"):
        g.get(keys[:50], ["city"], experiment="bad_tf")
    # a non-fused transform cannot differ by arm
    store.transforms.fit("onehot", "users", ["city"], T.OneHotEncoder())
    store.transforms.fit("onehot", "users", ["city"], T.OneHotEncoder(), pin=False)
    store.experiments.create("oh", ["a", "b"], serve={"b": {"transforms": {"onehot": "onehot@2"}}})
    store.commit()
    with pytest.raises(TransformError, match="fused"):
        g.get(keys[:50], transform="onehot", experiment="oh")


def test_stopped_experiment_serves_the_request(served: Any) -> None:
    store, g, keys, _ = served
    store.experiments.stop("emb_test")
    store.commit()
    b = g.get(keys[:100], ["emb"], experiment="emb_test")
    assert (b.arms == -1).all()
    np.testing.assert_array_equal(b["emb"], g.get(keys[:100], ["emb"])["emb"])


def test_string_keyed_group(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        schema = {"x": mmfs.scalar("float32"), "y": mmfs.scalar("float32")}
        g = store.create_group("u", key="name", key_type="str", schema=schema)
        names = np.array([f"user-{i}" for i in range(1000)])
        g.write(names, {"x": np.arange(1000, dtype=np.float32),
                        "y": -np.arange(1000, dtype=np.float32)})  # fmt: skip
        v1 = store.commit()
        store.experiments.create("e", ["a", "b"], serve={"b": {"features": {"x": "y"}}})
        g.write(names[:10], {"x": np.full(10, 5, np.float32), "y": np.zeros(10, np.float32)})
        store.experiments.create("old", ["a", "b"], serve={"b": {"version": v1}})
        store.commit()
        b = g.get(names.tolist(), ["x"], experiment="e")
        codes = store.experiments.get("e").assign(names)
        x = np.arange(1000, dtype=np.float32)
        y = -x.copy()
        x[:10], y[:10] = 5, 0
        np.testing.assert_array_equal(b["x"], np.where(codes == 1, y, x))
        old = g.get(names, ["x"], experiment="old")
        oc = store.experiments.get("old").assign(names)
        np.testing.assert_array_equal(old["x"], np.where(oc == 1, np.arange(1000), x))


# -- exposures ---------------------------------------------------------------------------------


def test_exposures_are_logged_deduplicated_and_read_back(served: Any, tmp_path: Path) -> None:
    store, g, keys, _ = served
    store.experiments.update("emb_test", log_exposures=True)
    store.commit()
    g.get(keys[:300], ["emb"], experiment="emb_test")
    g.get(keys[200:400], ["emb"], experiment="emb_test")  # 100 seen already
    g.get([1, 2], ["emb"], experiment="emb_test")  # missing keys are still exposed
    g.get(keys[:50], ["emb"], experiment="plain")  # not logged: log_exposures is off
    code = (
        "import mmfs, numpy as np\n"
        f"s = mmfs.open({str(tmp_path / 's')!r}, mode='r')\n"
        "s['users'].get(np.arange(0, 1500, 3), ['emb'], experiment='emb_test')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    cols = store.experiments.exposures("emb_test")
    e = store.experiments.get("emb_test")
    want = np.unique(np.concatenate([keys[:500], [1, 2]]))  # the other process read 500
    assert sorted(cols["key"].tolist()) == want.tolist()  # each key once
    codes = e.assign(cols["key"])
    assert cols["arm"].tolist() == [e.variants[c] for c in codes]
    assert set(cols["experiment"]) == {"emb_test"}
    assert set(cols["phase"]) == {0}
    assert set(cols["checksum"]) == {e.checksum}
    assert set(cols["hash_version"]) == {"murmur3_x86_32/v1"}
    assert np.all(np.diff(cols["time"].astype(np.int64)) >= 0)
    frame = to_frame(cols)
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == len(want)
    assert store.experiments.exposures("plain")["key"].size == 0
    # a torn tail (a process killed while writing) loses only that chunk
    log = next(p for p in (tmp_path / "s" / "exposures").iterdir() if p.suffix == ".log")
    data = log.read_bytes()
    log.write_bytes(data + data[: len(data) // 2])
    assert store.experiments.exposures("emb_test")["key"].size == len(want)
    # a new phase logs again
    store.experiments.restart("emb_test")
    store.commit()
    g.get(keys[:10], ["emb"], experiment="emb_test")
    cols = store.experiments.exposures()
    assert np.count_nonzero(cols["phase"] == 1) == 10
    store.experiments.log.close()


def test_string_key_exposures(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group(
            "u", key="name", key_type="str", schema={"x": mmfs.scalar("float32")}
        )
        names = [f"user-{i}" for i in range(100)]
        g.write(names, {"x": np.arange(100, dtype=np.float32)})
        store.experiments.create("e", ["a", "b"], log_exposures=True)
        store.commit()
        g.get(names[:60], experiment="e")
        g.get(names[40:], experiment="e")
        cols = store.experiments.exposures("e")
        assert sorted(cols["key"].tolist()) == sorted(names)
        assert os.path.isdir(tmp_path / "s" / "exposures")


def test_kernel_positions_and_variants_are_checked(served: Any) -> None:
    store, g, keys, _ = served
    snap = store._snapshot("users")
    plan = snap.plan(["age"])
    out = np.zeros(4 * 4, dtype=np.uint8)
    rows = np.empty(2, dtype=np.int64)
    q = keys[:2].copy()
    with pytest.raises(ValueError, match="outside"):
        snap.table.get_int(q, rows, plan.fields, out, 1, np.array([0, 4]))
    with pytest.raises(ValueError, match="one record position"):
        snap.table.get_int(q, rows, plan.fields, out, 1, np.array([0]))
    with pytest.raises(ValueError, match="variant"):
        snap.table.get_int(q, rows, plan.fields, out, 1, None, np.zeros(2, np.int8))
    with pytest.raises(ValueError, match="outside"):
        snap.table.gather_plan(rows, plan.fields, out, 1, np.array([0, 9]))
    with pytest.raises(ValueError, match="one record position"):
        snap.table.gather_plan(rows, plan.fields, out, 1, np.array([0]))
    with pytest.raises(ValueError, match="set_variants"):
        plan.fields.set_variants(np.zeros(0, np.int64), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="negative"):
        plan.fields.set_variants(np.array([-2]), np.zeros(0, np.int64))
    scaled = snap.plan(g._selection(snap, ["score"], "scale"))
    with pytest.raises(ValueError, match="parameters outside"):
        scaled.fields.set_variants(np.array(scaled.parts[0]), np.array([5]))
    from mmfs._kernels import _assign

    table = np.array([0, 1, 2], np.int8)
    got = np.empty(4, np.int8)
    _assign.remap_codes(np.array([-1, 0, 1, 0], np.int16), table, got)
    assert got.tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match="outside the table"):
        _assign.remap_codes(np.array([2], np.int16), table, got[:1])
    with pytest.raises(ValueError, match="one output"):
        _assign.remap_codes(np.array([0], np.int16), table, got)
    # records written where asked, zeros for missing keys
    q2 = np.array([keys[3], 1])
    out2 = np.full(3 * 4, 7, dtype=np.uint8)
    snap.table.get_int(q2, rows, plan.fields, out2, 1, np.array([2, 0]))
    got = out2.view(np.float32)
    assert got[2] == g.get(keys[3], ["age"])["age"][0]
    assert got[0] == 0
    assert out2[4:8].tolist() == [7, 7, 7, 7]
