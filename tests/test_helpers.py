"""The tie-tolerant k-NN comparison helper is itself tested: it must accept every correct
answer and reject the wrong ones, or the neighbour tests prove nothing."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_knn_equivalent, ref_knn, tie_groups

INF = np.inf


def test_identical_results_pass():
    rng = np.random.default_rng(0)
    d = rng.random((4, 30))
    idx, dist = ref_knn(d, 5)
    assert_knn_equivalent(idx, dist, idx, dist, rtol=1e-12)
    assert_knn_equivalent(idx, dist, idx, dist, rtol=1e-12, full_dist=d)


def test_accepts_permutation_within_tie_group():
    ref_i = np.array([[3, 1, 7, 2, 9]])
    ref_d = np.array([[0.1, 0.5, 0.5, 0.5, 0.9]])
    got_i = np.array([[3, 7, 2, 1, 9]])
    assert_knn_equivalent(got_i, ref_d, ref_i, ref_d, rtol=1e-9)


def test_accepts_near_ties_within_rtol():
    ref_i = np.array([[4, 5, 6]])
    ref_d = np.array([[1.0, 2.0, 2.0 + 1e-10]])
    got_i = np.array([[4, 6, 5]])
    got_d = np.array([[1.0, 2.0 + 1e-10, 2.0]])
    assert_knn_equivalent(got_i, got_d, ref_i, ref_d, rtol=1e-8)


def test_accepts_other_member_of_a_last_group_cut_by_k():
    # Rows 2, 5 and 8 tie at 0.7; k = 3 keeps one of them: any is a correct answer.
    ref_i = np.array([[0, 1, 2]])
    ref_d = np.array([[0.1, 0.2, 0.7]])
    got_i = np.array([[0, 1, 8]])
    full = np.full((1, 10), 5.0)
    full[0, [0, 1, 2, 5, 8]] = [0.1, 0.2, 0.7, 0.7, 0.7]
    assert_knn_equivalent(got_i, ref_d, ref_i, ref_d, rtol=1e-12, full_dist=full)


def test_rejects_wrong_index_outside_ties():
    ref_i = np.array([[3, 1, 7]])
    ref_d = np.array([[0.1, 0.5, 0.9]])
    with pytest.raises(AssertionError, match="tie group"):
        assert_knn_equivalent(np.array([[3, 2, 7]]), ref_d, ref_i, ref_d, rtol=1e-9)
    with pytest.raises(AssertionError, match="tie group"):
        assert_knn_equivalent(np.array([[1, 3, 7]]), ref_d, ref_i, ref_d, rtol=1e-9)


def test_rejects_index_swapped_between_groups():
    ref_i = np.array([[3, 1, 7, 2]])
    ref_d = np.array([[0.1, 0.5, 0.5, 0.9]])
    with pytest.raises(AssertionError):
        assert_knn_equivalent(np.array([[1, 3, 7, 2]]), ref_d, ref_i, ref_d, rtol=1e-9)


def test_rejects_wrong_last_index_when_full_distances_known():
    ref_i = np.array([[0, 1]])
    ref_d = np.array([[0.1, 0.7]])
    full = np.array([[0.1, 0.7, 0.9]])
    assert_knn_equivalent(np.array([[0, 1]]), ref_d, ref_i, ref_d, rtol=1e-9, full_dist=full)
    with pytest.raises(AssertionError, match="is at distance"):
        assert_knn_equivalent(np.array([[0, 2]]), ref_d, ref_i, ref_d, rtol=1e-9, full_dist=full)


def test_rejects_distance_mismatch():
    ref_i = np.array([[0, 1, 2]])
    ref_d = np.array([[1.0, 2.0, 3.0]])
    bad = np.array([[1.0, 2.0 * (1 + 1e-6), 3.0]])
    with pytest.raises(AssertionError, match="distance mismatch"):
        assert_knn_equivalent(ref_i, bad, ref_i, ref_d, rtol=1e-9)
    assert_knn_equivalent(ref_i, bad, ref_i, ref_d, rtol=1e-5)


def test_rejects_nan_against_number_and_accepts_nan_against_nan():
    ref_i = np.array([[0, 1]])
    ref_d = np.array([[1.0, np.nan]])
    assert_knn_equivalent(ref_i, ref_d.copy(), ref_i, ref_d, rtol=1e-9)
    with pytest.raises(AssertionError, match="distance mismatch"):
        assert_knn_equivalent(ref_i, np.array([[1.0, 2.0]]), ref_i, ref_d, rtol=1e-9)


def test_handles_padding():
    ref_i = np.array([[2, 0, -1, -1]])
    ref_d = np.array([[0.5, 0.8, INF, INF]])
    assert_knn_equivalent(ref_i.copy(), ref_d.copy(), ref_i, ref_d, rtol=1e-9)
    # padding where a neighbour should be
    with pytest.raises(AssertionError):
        assert_knn_equivalent(
            np.array([[2, -1, -1, -1]]), np.array([[0.5, INF, INF, INF]]), ref_i, ref_d, 1e-9
        )
    # a neighbour where padding should be
    with pytest.raises(AssertionError):
        assert_knn_equivalent(
            np.array([[2, 0, 1, -1]]), np.array([[0.5, 0.8, INF, INF]]), ref_i, ref_d, 1e-9
        )
    # padding must carry +inf
    with pytest.raises(AssertionError):
        assert_knn_equivalent(ref_i, np.array([[0.5, 0.8, INF, np.nan]]), ref_i, ref_d, rtol=1e-9)


def test_rejects_repeated_index():
    ref_i = np.array([[4, 5, 6]])
    ref_d = np.array([[1.0, 1.0, 1.0]])
    with pytest.raises(AssertionError, match="repeated"):
        assert_knn_equivalent(np.array([[4, 4, 6]]), ref_d, ref_i, ref_d, rtol=1e-9)


def test_rejects_shape_mismatch():
    ref_i = np.array([[0, 1]])
    ref_d = np.array([[1.0, 2.0]])
    with pytest.raises(AssertionError, match="shapes"):
        assert_knn_equivalent(ref_i[:, :1], ref_d[:, :1], ref_i, ref_d, rtol=1e-9)


def test_tie_groups():
    d = np.array([0.0, 1.0, 1.0, 1.0 + 1e-13, 2.0, INF, INF])
    groups = tie_groups(d, rtol=1e-12)
    assert [(g.start, g.stop) for g in groups] == [(0, 1), (1, 4), (4, 5), (5, 7)]
    assert [(g.start, g.stop) for g in tie_groups(d, rtol=0.0)] == [
        (0, 1),
        (1, 3),
        (3, 4),
        (4, 5),
        (5, 7),
    ]


def test_ref_knn_orders_nan_last_ties_by_index_and_pads():
    d = np.array([[0.5, np.nan, 0.2, 0.5, np.nan]])
    idx, dist = ref_knn(d, 7)
    assert idx.tolist() == [[2, 0, 3, 1, 4, -1, -1]]
    assert np.array_equal(dist, np.array([[0.2, 0.5, 0.5, np.nan, np.nan, INF, INF]]), True)
