"""Revisited-protocol evaluation against a slow reference written straight from the protocol."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from asymret.data.revisitop import load_gnd, write_gnd
from asymret.errors import AsymretError
from asymret.evaluate import (
    PROTOCOLS,
    compute_map,
    compute_map_from_features,
    database_positions,
    evaluate_retrieval,
    precision_recall_points,
    protocol_ground_truth,
    rank_database,
)
from asymret.feature_files import evaluate_feature_files

SHARED_REVISITOP = Path(__file__).resolve().parents[2] / "shared" / "data" / "revisitop"
KAPPAS = (1, 5, 10)


# --- Slow reference: plain Python loops, nothing shared with asymret.evaluate. ---


def reference_rankings(scores):
    """Per query, database indices by decreasing score; equal scores by lower index."""
    return [sorted(range(len(row)), key=lambda image: (-row[image], image)) for row in scores]


def reference_map(rankings, ground_truth, kappas):
    """``(map, aps, mpk, prs)`` of the revisited protocol, one query and one image at a time."""
    aps, prs = [], []
    ap_sum, precision_sums, used = 0.0, [0.0] * len(kappas), 0
    for ranking, truth in zip(rankings, ground_truth, strict=True):
        ok_list = [int(image) for image in truth["ok"]]
        ok, junk = set(ok_list), {int(image) for image in truth["junk"]}
        if not ok_list:
            aps.append(math.nan)
            prs.append([math.nan] * len(kappas))
            continue
        # Rank of each positive once the junk images ranked before it are taken out.
        positive_ranks, junk_so_far = [], 0
        for position, image in enumerate(ranking):
            if image in ok:
                positive_ranks.append(position - junk_so_far)
            if image in junk:
                junk_so_far += 1
        ap = 0.0
        for hits_before, rank in enumerate(positive_ranks):
            precision_before = 1.0 if rank == 0 else hits_before / rank
            precision_at = (hits_before + 1) / (rank + 1)
            ap += (precision_before + precision_at) * (1.0 / len(ok_list)) / 2.0
        precisions = []
        for kappa in kappas:
            cut = min(max(rank + 1 for rank in positive_ranks), kappa)
            precisions.append(sum(1 for rank in positive_ranks if rank + 1 <= cut) / cut)
        aps.append(ap)
        prs.append(precisions)
        ap_sum += ap
        for i, precision in enumerate(precisions):
            precision_sums[i] += precision
        used += 1
    return ap_sum / used, aps, [total / used for total in precision_sums], prs


def assert_same_result(result, expected):
    mean_ap, aps, mpk, prs = result
    expected_map, expected_aps, expected_mpk, expected_prs = expected
    assert mean_ap == expected_map
    np.testing.assert_array_equal(aps, np.array(expected_aps, dtype=np.float64))
    np.testing.assert_array_equal(mpk, np.array(expected_mpk, dtype=np.float64))
    np.testing.assert_array_equal(prs, np.array(expected_prs, dtype=np.float64).reshape(prs.shape))


def integer_features(rng, num_queries, num_database, dim, largest):
    """Small-integer vectors: exact dot products, many tied scores, some duplicate rows."""
    queries = rng.integers(-largest, largest + 1, (num_queries, dim)).astype(np.float32)
    database = rng.integers(-largest, largest + 1, (num_database, dim)).astype(np.float32)
    copies = rng.integers(0, num_database, num_database // 5)
    database[rng.integers(0, num_database, copies.size)] = database[copies]
    exact_scores = queries.astype(np.int64) @ database.astype(np.int64).T
    return queries, database, exact_scores.tolist()


def random_ground_truth(rng, rankings, num_database):
    """Varied patterns: empty ok, empty junk, ok/junk overlap, repeated ok, first/last ranked."""
    ground_truth = []
    for query, ranking in enumerate(rankings):
        most = min(num_database, 12)
        ok = rng.choice(num_database, rng.integers(1, most + 1), replace=False).tolist()
        junk = rng.choice(num_database, rng.integers(0, most + 1), replace=False).tolist()
        pattern = query % 6
        if pattern == 0:
            ok = []
        elif pattern == 1:
            junk = []
        elif pattern == 2:
            junk += ok[:2]
            ok += ok[:1]
        elif pattern == 3:
            ok = [ranking[0], *ok]
            junk = [ranking[1 % num_database], *junk]
        elif pattern == 4:
            ok = [*ok, ranking[-1]]
        ground_truth.append({"ok": ok, "junk": junk})
    return ground_truth


@pytest.mark.parametrize(
    ("seed", "num_queries", "num_database", "dim", "largest", "chunk_size"),
    [
        (0, 6, 1, 1, 1, 1),
        (1, 12, 7, 2, 1, 3),
        (2, 12, 50, 3, 2, 16),
        (3, 18, 300, 4, 2, 64),
        (4, 12, 300, 8, 3, 1000),
        (5, 6, 257, 1, 1, 32),
    ],
)
def test_plain_and_fast_paths_equal_the_reference(
    seed, num_queries, num_database, dim, largest, chunk_size
):
    rng = np.random.default_rng(seed)
    queries, database, exact_scores = integer_features(rng, num_queries, num_database, dim, largest)
    rankings = reference_rankings(exact_scores)
    ground_truth = random_ground_truth(rng, rankings, num_database)
    expected = reference_map(rankings, ground_truth, KAPPAS)

    ranks = rank_database(queries, database, chunk_size=chunk_size)
    np.testing.assert_array_equal(ranks, np.array(rankings).T)
    assert_same_result(compute_map(ranks, ground_truth, KAPPAS), expected)
    assert_same_result(
        compute_map_from_features(queries, database, ground_truth, KAPPAS, chunk_size=chunk_size),
        expected,
    )


# --- Hand-worked examples. Database scores fall with the index unless stated. ---


def descending_features(num_database):
    """One-dimensional features whose ranking is 0, 1, 2, ... (score = n - index)."""
    database = np.arange(num_database, 0, -1, dtype=np.float32)[:, None]
    return np.ones((1, 1), dtype=np.float32), database


def check_both_paths(ground_truth, queries, database, expected_ap, expected_precisions):
    """The plain path, the fast path and the slow reference all give the hand-worked values."""
    ranks = rank_database(queries, database)
    reference_rank_lists = reference_rankings((queries @ database.T).tolist())
    for mean_ap, aps, mpk, prs in (
        reference_map(reference_rank_lists, ground_truth, KAPPAS),
        compute_map(ranks, ground_truth, KAPPAS),
        compute_map_from_features(queries, database, ground_truth, KAPPAS, chunk_size=2),
    ):
        assert mean_ap == pytest.approx(expected_ap, rel=1e-12)
        assert aps[0] == pytest.approx(expected_ap, rel=1e-12)
        np.testing.assert_allclose(prs[0], expected_precisions, rtol=1e-12)
        np.testing.assert_allclose(mpk, expected_precisions, rtol=1e-12)


def test_hand_worked_junk_removal_and_precision_cut():
    # Ranking 0..9; ok at positions 1, 4, 7; junk at 2 -> ranks 1, 3, 6 once junk is out.
    # AP = 1/3 * [(0/1 + 1/2)/2 + (1/3 + 2/4)/2 + (2/6 + 3/7)/2] = 1/3 * (1/4 + 5/12 + 8/21)
    #    = 1/3 * 88/84 = 22/63.
    # 1-based ranks 2, 4, 7. P@1: cut 1, 0 hits -> 0. P@5: cut 5, 2 hits -> 2/5.
    # P@10: cut = min(7, 10) = 7 (official quirk), 3 hits -> 3/7, not 3/10.
    queries, database = descending_features(10)
    ground_truth = [{"ok": [1, 4, 7], "junk": [2]}]
    check_both_paths(ground_truth, queries, database, 22 / 63, [0.0, 2 / 5, 3 / 7])


def test_hand_worked_positives_first_and_cut_below_k():
    # ok at positions 0 and 2, junk at 1 -> ranks 0, 1. AP = 1/2 * [(1 + 1)/2 + (1/1 + 2/2)/2] = 1.
    # 1-based ranks 1, 2: P@5 cut = min(2, 5) = 2 -> 2/2 = 1 (not 2/5); P@1 = 1/1; P@10 = 1.
    queries, database = descending_features(6)
    check_both_paths([{"ok": [0, 2], "junk": [1]}], queries, database, 1.0, [1.0, 1.0, 1.0])


def test_hand_worked_image_both_positive_and_junk():
    # ok 3, 5; junk 1, 3. Image 3 stays a positive and is not moved by itself (junk strictly
    # before it: only 1) -> rank 2; image 5 has junk 1 and 3 before it -> rank 3.
    # AP = 1/2 * [(0/2 + 1/3)/2 + (1/3 + 2/4)/2] = 1/2 * (1/6 + 5/12) = 7/24.
    # 1-based ranks 3, 4: P@1 = 0; P@5 cut 4 -> 2/4; P@10 cut 4 -> 2/4.
    queries, database = descending_features(8)
    ground_truth = [{"ok": [3, 5], "junk": [1, 3]}]
    check_both_paths(ground_truth, queries, database, 7 / 24, [0.0, 0.5, 0.5])


def test_hand_worked_tied_scores_ranked_by_index():
    # Scores 1, 2, 2, 0, 2 -> stable descending order 1, 2, 4, 0, 3.
    # ok 4 (position 2), 0 (position 3); junk 2 (position 1) -> ranks 1, 2.
    # AP = 1/2 * [(0/1 + 1/2)/2 + (1/2 + 2/3)/2] = 1/2 * (1/4 + 7/12) = 5/12.
    # 1-based ranks 2, 3: P@1 = 0; P@5 cut 3 -> 2/3; P@10 cut 3 -> 2/3.
    queries = np.ones((1, 1), dtype=np.float32)
    database = np.array([[1.0], [2.0], [2.0], [0.0], [2.0]], dtype=np.float32)
    np.testing.assert_array_equal(rank_database(queries, database)[:, 0], [1, 2, 4, 0, 3])
    ground_truth = [{"ok": [4, 0], "junk": [2]}]
    check_both_paths(ground_truth, queries, database, 5 / 12, [0.0, 2 / 3, 2 / 3])


def test_query_without_positives_is_left_out_of_both_means():
    # Query 0 as in the junk-removal example (AP 22/63); query 1 has no positives.
    database = np.arange(10, 0, -1, dtype=np.float32)[:, None]
    queries = np.ones((2, 1), dtype=np.float32)
    ground_truth = [{"ok": [1, 4, 7], "junk": [2]}, {"ok": [], "junk": [0]}]
    for mean_ap, aps, mpk, prs in (
        compute_map(rank_database(queries, database), ground_truth, KAPPAS),
        compute_map_from_features(queries, database, ground_truth, KAPPAS),
    ):
        assert mean_ap == pytest.approx(22 / 63, rel=1e-12)
        assert math.isnan(aps[1]) and np.isnan(prs[1]).all()
        np.testing.assert_allclose(mpk, [0.0, 2 / 5, 3 / 7], rtol=1e-12)


def test_truncated_ranking_keeps_the_full_denominator():
    # Only 3 images ranked; ok 0 and 9 -> only image 0 (rank 0) counts:
    # AP = 1/2 * (1 + 1)/2 = 1/2. 1-based ranks [1]: every cut is 1 -> P@k = 1.
    mean_ap, _, mpk, _ = compute_map(np.array([[0], [1], [2]]), [{"ok": [0, 9]}], KAPPAS)
    assert mean_ap == 0.5
    np.testing.assert_array_equal(mpk, [1.0, 1.0, 1.0])


def test_precision_recall_points_after_junk_removal():
    # As the junk-removal example: ranks 1, 3, 6 -> recall 1/3, 2/3, 1; precision 1/2, 2/4, 3/7.
    queries, database = descending_features(10)
    ground_truth = [{"ok": [1, 4, 7], "junk": [2]}, {"ok": [], "junk": []}]
    queries = np.repeat(queries, 2, axis=0)
    (recall, precision), (empty_recall, empty_precision) = precision_recall_points(
        queries, database, ground_truth
    )
    np.testing.assert_allclose(recall, [1 / 3, 2 / 3, 1.0], rtol=1e-15)
    np.testing.assert_allclose(precision, [1 / 2, 2 / 4, 3 / 7], rtol=1e-15)
    assert empty_recall.size == 0 and empty_precision.size == 0


# --- Fast path on larger data. ---


def test_fast_path_equals_full_sort_on_a_larger_random_case():
    rng = np.random.default_rng(7)
    num_database = 50_000
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    database = rng.standard_normal((num_database, 32)).astype(np.float32)
    database[-100:] = database[:100]  # duplicate vectors: tied scores
    ground_truth = [
        {
            "ok": rng.choice(num_database, rng.integers(0 if q == 0 else 1, 100)).tolist(),
            "junk": rng.choice(num_database, rng.integers(0, 100)).tolist() + list(range(q)),
        }
        for q in range(20)
    ]
    chunk_size = 4096  # 13 chunks, the last one partial
    plain = compute_map(rank_database(queries, database, chunk_size=chunk_size), ground_truth)
    fast = compute_map_from_features(queries, database, ground_truth, chunk_size=chunk_size)
    assert_same_result(fast, plain)


def test_database_positions_invert_the_full_ranking():
    rng = np.random.default_rng(11)
    queries, database, _ = integer_features(rng, 5, 2000, 3, 2)
    ranks = rank_database(queries, database, chunk_size=300)
    requested = [rng.integers(0, 2000, size) for size in (0, 1, 40, 400, 2000)]
    requested[2] = np.concatenate([requested[2], requested[2][:5]])  # repeated indices
    found = database_positions(queries, database, requested, chunk_size=300)
    for query, (indices, positions) in enumerate(zip(requested, found, strict=True)):
        position_of = np.empty(2000, dtype=np.int64)
        position_of[ranks[:, query]] = np.arange(2000)
        np.testing.assert_array_equal(positions, position_of[indices])


def test_evaluate_retrieval_equals_the_reference_with_overlapping_gnd_lists():
    # Not in the real files, but handled as the official code: an image listed twice in ok
    # counts twice in len(ok); an image both ok and junk stays a positive.
    rng = np.random.default_rng(5)
    queries, database, exact_scores = integer_features(rng, 12, 200, 3, 2)
    rankings = reference_rankings(exact_scores)
    gnd = []
    for query, truth in enumerate(random_ground_truth(rng, rankings, 200)):
        easy, junk = truth["ok"], truth["junk"]
        hard = rng.choice(200, query % 4, replace=False).tolist() + easy[:1]
        gnd.append({"easy": easy, "hard": hard, "junk": junk + hard[:1]})
    result = evaluate_retrieval(queries, database, gnd, chunk_size=32)
    for protocol in PROTOCOLS:
        mean_ap, aps, mpk, _ = reference_map(rankings, protocol_ground_truth(gnd, protocol), KAPPAS)
        assert result.map[protocol] == 100 * mean_ap
        np.testing.assert_array_equal(result.ap_per_query[protocol], 100 * np.array(aps))
        assert result.mp_at_k[protocol] == [100 * value for value in mpk]


def test_torch_inputs_and_half_precision_give_the_same_result():
    rng = np.random.default_rng(3)
    queries, database, exact_scores = integer_features(rng, 12, 400, 4, 2)
    rankings = reference_rankings(exact_scores)
    gnd = [
        {"easy": truth["ok"], "hard": truth["ok"][:1], "junk": truth["junk"]}
        for truth in random_ground_truth(rng, rankings, 400)
    ]
    expected = evaluate_retrieval(queries, database, gnd, chunk_size=64).to_dict()
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        result = evaluate_retrieval(
            torch.from_numpy(queries), torch.from_numpy(database).to(dtype), gnd, chunk_size=64
        )
        assert result.to_dict() == expected


# --- Real revisitop ground truth. ---


def real_gnd(name):
    path = SHARED_REVISITOP / f"gnd_{name}.pkl"
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return load_gnd(path)


@pytest.mark.parametrize(("name", "num_images"), [("roxford5k", 4993), ("rparis6k", 6322)])
def test_real_gnd_loads(name, num_images):
    gnd = real_gnd(name)
    assert len(gnd["imlist"]) == num_images
    assert len(gnd["qimlist"]) == len(gnd["gnd"]) == 70
    for entry in gnd["gnd"]:
        assert len(entry["bbx"]) == 4
        assert all(
            0 <= index < num_images for key in ("easy", "hard", "junk") for index in entry[key]
        )


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_real_gnd_fast_equals_plain_equals_reference(name):
    gnd = real_gnd(name)
    rng = np.random.default_rng(0)
    queries, database, exact_scores = integer_features(rng, 70, len(gnd["imlist"]), 6, 1)
    rankings = reference_rankings(exact_scores)
    ranks = rank_database(queries, database, chunk_size=2500)
    result = evaluate_retrieval(queries, database, gnd, chunk_size=2500)
    for protocol in PROTOCOLS:
        ground_truth = protocol_ground_truth(gnd, protocol)
        expected = reference_map(rankings, ground_truth, KAPPAS)
        assert_same_result(compute_map(ranks, ground_truth, KAPPAS), expected)
        assert_same_result(
            compute_map_from_features(queries, database, ground_truth, KAPPAS, chunk_size=2500),
            expected,
        )
        assert result.map[protocol] == 100 * expected[0]
        assert result.mp_at_k[protocol] == [100 * value for value in expected[2]]


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_real_gnd_float_features_fast_equals_plain(name):
    gnd = real_gnd(name)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    database = rng.standard_normal((len(gnd["imlist"]), 16)).astype(np.float32)
    result = evaluate_retrieval(queries, database, gnd, chunk_size=2048)
    ranks = rank_database(queries, database, chunk_size=2048)
    for protocol in PROTOCOLS:
        mean_ap, aps, mpk, _ = compute_map(ranks, protocol_ground_truth(gnd, protocol), KAPPAS)
        assert result.map[protocol] == 100 * mean_ap
        np.testing.assert_array_equal(result.ap_per_query[protocol], 100 * aps)
        assert result.mp_at_k[protocol] == (100 * mpk).tolist()


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_real_gnd_positives_ranked_first_score_100(name):
    gnd = real_gnd(name)
    num_images = len(gnd["imlist"])
    for protocol in PROTOCOLS:
        ground_truth = protocol_ground_truth(gnd, protocol)
        ranks = np.empty((num_images, 70), dtype=np.int64)
        for query, truth in enumerate(ground_truth):
            first = list(dict.fromkeys(truth["ok"].tolist()))
            rest = sorted(set(range(num_images)) - set(first))
            ranks[:, query] = first + rest
        mean_ap, _, mpk, _ = compute_map(ranks, ground_truth, KAPPAS)
        assert mean_ap == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(mpk, 1.0, atol=1e-12)
    # Features: query q scores 1 on its easy and hard images, 0 elsewhere. The Medium
    # positives come first; in Easy (Hard) the hard (easy) ones are junk, so all protocols
    # score 100.
    queries = np.eye(70, dtype=np.float32)
    database = np.zeros((num_images, 70), dtype=np.float32)
    for query, entry in enumerate(gnd["gnd"]):
        database[entry["easy"] + entry["hard"], query] = 1.0
    result = evaluate_retrieval(queries, database, gnd).to_dict()
    for protocol in PROTOCOLS:
        assert result["map"][protocol] == pytest.approx(100.0, abs=1e-10)
        np.testing.assert_allclose(result["mp@k"][protocol], 100.0, atol=1e-10)


def test_roxford_easy_leaves_out_the_two_queries_without_positives():
    gnd = real_gnd("roxford5k")
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((70, 8)).astype(np.float32)
    database = rng.standard_normal((len(gnd["imlist"]), 8)).astype(np.float32)
    result = evaluate_retrieval(queries, database, gnd)
    assert result.queries_used == {"easy": 68, "medium": 70, "hard": 70}
    easy_aps = result.ap_per_query["easy"]
    without_positives = [q for q, entry in enumerate(gnd["gnd"]) if not entry["easy"]]
    assert len(without_positives) == 2
    assert np.flatnonzero(np.isnan(easy_aps)).tolist() == without_positives
    assert result.map["easy"] == pytest.approx(np.nansum(easy_aps) / 68, rel=1e-12)


# --- Result formatting. ---


def test_result_dict_and_table():
    queries, database = descending_features(10)
    gnd = [{"easy": [1, 4], "hard": [7], "junk": [2]}]
    result = evaluate_retrieval(queries, database, gnd)
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert set(as_dict) == {"map", "mp@k"}
    assert set(as_dict["map"]) == {"easy", "medium", "hard"}
    assert set(as_dict["mp@k"]) == {"k", "easy", "medium", "hard"}
    assert as_dict["mp@k"]["k"] == [1, 5, 10]
    # Medium = the junk-removal example: AP 22/63, in percent and unrounded.
    assert as_dict["map"]["medium"] == pytest.approx(100 * 22 / 63, rel=1e-12)
    # Easy: ok 1, 4 with junk 2, 7 -> ranks 1, 3 -> AP = 1/2 * (1/4 + 5/12) = 1/3.
    # Hard: ok 7 with junk 2, 1, 4 before it -> rank 4 -> AP = (0/4 + 1/5)/2 = 1/10.
    lines = result.format_table().splitlines()
    assert [line.split()[0] for line in lines] == ["mAP", "mP@1", "mP@5", "mP@10"]
    assert lines[0].split()[1:] == ["E", "33.33", "M", "34.92", "H", "10.00"]


# --- Validation. ---


def small_problem():
    queries, database = descending_features(10)
    return np.repeat(queries, 2, axis=0), database, [{"easy": [1], "hard": [], "junk": []}] * 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, x, g: (q[0], x, g), "queries: expected a 2-D array"),
        (lambda q, x, g: (q, x[None], g), "database: expected a 2-D array"),
        (lambda q, x, g: (q, np.hstack([x, x]), g), "dimension mismatch: queries have D=1"),
        (lambda q, x, g: (q, x.astype(np.int64), g), "database: expected floating-point"),
        (lambda q, x, g: (q, x, g[:1]), "queries has 2 rows but the ground truth has 1 queries"),
        (
            lambda q, x, g: (q, x, [g[0], {"easy": [1], "hard": [], "junk": [3, 10]}]),
            "ground truth of query 1 ('junk'): index 10 is outside the database of 10 vectors",
        ),
        (
            lambda q, x, g: (q, x, [{"easy": [-1], "hard": [], "junk": []}, g[1]]),
            "ground truth of query 0 ('easy'): index -1 is outside",
        ),
        (lambda q, x, g: (q, x, [{"easy": [1]}, g[1]]), "ground truth of query 0: missing 'hard'"),
    ],
)
def test_evaluate_retrieval_rejects_bad_input(change, message):
    queries, database, gnd = change(*small_problem())
    with pytest.raises(AsymretError, match=re.escape(message)):
        evaluate_retrieval(queries, database, gnd)


@pytest.mark.parametrize(("array", "bad_value"), [("queries", np.nan), ("database", np.inf)])
def test_non_finite_vectors_name_the_array_and_first_bad_row(array, bad_value):
    queries, database, gnd = small_problem()
    bad = {"queries": queries, "database": database}[array]
    bad[-1, 0] = bad_value
    with pytest.raises(AsymretError, match=f"{array}: row {bad.shape[0] - 1} holds NaN or Inf"):
        evaluate_retrieval(queries, database, gnd, chunk_size=3)


def test_bad_kappas_and_protocol_are_refused():
    queries, database, gnd = small_problem()
    with pytest.raises(AsymretError, match="kappas must be positive integers"):
        evaluate_retrieval(queries, database, gnd, kappas=(1, 0))
    with pytest.raises(AsymretError, match="unknown protocol 'medum'"):
        protocol_ground_truth(gnd, "medum")


def test_evaluate_feature_files(tmp_path):
    queries, database, gnd_list = small_problem()
    gnd_path = write_gnd(tmp_path / "gnd.pkl", [f"i{i}" for i in range(10)], ["q0", "q1"], gnd_list)
    np.save(tmp_path / "queries.npy", queries)
    np.save(tmp_path / "database.npy", database)
    result = evaluate_feature_files(gnd_path, tmp_path / "queries.npy", tmp_path / "database.npy")
    expected = evaluate_retrieval(queries, database, gnd_list).to_dict()
    assert json.dumps(result.to_dict()) == json.dumps(expected)  # NaN (no hard positives) too

    missing = tmp_path / "missing.npy"
    with pytest.raises(AsymretError, match=f"{missing}: no such file"):
        evaluate_feature_files(gnd_path, tmp_path / "queries.npy", missing)
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"not an npy file at all")
    with pytest.raises(AsymretError, match=f"{corrupt}: not a readable .npy file"):
        evaluate_feature_files(gnd_path, corrupt, tmp_path / "database.npy")
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AsymretError, match=f"{objects}: not a readable .npy file"):
        evaluate_feature_files(gnd_path, objects, tmp_path / "database.npy")
