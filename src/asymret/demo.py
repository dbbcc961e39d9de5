"""Built-in example: the asymmetric-retrieval problem on synthetic vectors, in seconds.

A teacher and a weaker student embed the same synthetic landmark views into different
spaces. Symmetric search works for both networks, but student queries against the teacher's
database fail until the student is aligned to the teacher — here by a closed-form least-squares
map fitted on training landmarks disjoint from the test ones, the linear analogue of the
regression loss. Everything is written in the official file formats so that
``asymret evaluate-features`` can be run on it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from asymret.evaluate import evaluate_retrieval

LATENT_DIM = 32
DESCRIPTOR_DIM = 64
EASY_BELOW, HARD_BELOW = 0.45, 0.75
VIEW_SPREAD = 9.0


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _views(rng: np.random.Generator, centres: np.ndarray, per_landmark: int):
    """Latent vectors of views of each landmark; difficulty t in [0, 1) grows with view change."""
    landmark = np.repeat(np.arange(len(centres)), per_landmark)
    difficulty = rng.random(len(landmark))
    noise = rng.normal(size=(len(landmark), LATENT_DIM)) / np.sqrt(LATENT_DIM)
    latent = centres[landmark] + VIEW_SPREAD * difficulty[:, None] * noise
    return latent, landmark, difficulty


def make_example(seed: int = 0, test_landmarks: int = 20, train_landmarks: int = 60):
    """Synthetic revisitop-style ground truth and teacher/student descriptors.

    Returns:
        gnd: dict with ``imlist``, ``qimlist``, ``gnd`` (per query ``bbx``, easy, hard, junk).
        vectors: dict of (n, 64) float32 unit vectors: ``teacher_queries``,
            ``teacher_database``, ``student_queries``, ``student_database``,
            ``student_train``, ``teacher_train``.
    """
    rng = np.random.default_rng(seed)
    teacher_map = rng.normal(size=(LATENT_DIM, DESCRIPTOR_DIM))
    student_map = rng.normal(size=(LATENT_DIM, DESCRIPTOR_DIM))
    student_mix = rng.normal(size=(DESCRIPTOR_DIM, DESCRIPTOR_DIM)) / np.sqrt(DESCRIPTOR_DIM)

    def teacher(latent):
        projected = latent @ teacher_map
        return _normalise(projected + 0.3 * rng.normal(size=projected.shape))

    def student(latent):
        hidden = np.tanh(latent @ student_map / 2) @ student_mix
        return _normalise(hidden + 0.15 * rng.normal(size=hidden.shape))

    centres = rng.normal(size=(test_landmarks + train_landmarks, LATENT_DIM))
    test_centres, train_centres = centres[:test_landmarks], centres[test_landmarks:]
    db_latent, db_landmark, db_difficulty = _views(rng, test_centres, per_landmark=30)
    distractors = rng.normal(size=(400, LATENT_DIM))
    db_latent = np.concatenate([db_latent, distractors])
    db_landmark = np.concatenate([db_landmark, np.full(len(distractors), -1)])
    db_difficulty = np.concatenate([db_difficulty, np.ones(len(distractors))])
    query_landmark = np.repeat(np.arange(test_landmarks), 2)
    query_latent = test_centres[query_landmark] + 0.3 * rng.normal(
        size=(len(query_landmark), LATENT_DIM)
    ) / np.sqrt(LATENT_DIM)
    train_latent, _, _ = _views(rng, train_centres, per_landmark=20)

    gnd = []
    for q in query_landmark:
        same = db_landmark == q
        easy = np.flatnonzero(same & (db_difficulty < EASY_BELOW))
        hard = np.flatnonzero(same & (db_difficulty >= EASY_BELOW) & (db_difficulty < HARD_BELOW))
        junk = np.flatnonzero(same & (db_difficulty >= HARD_BELOW))
        gnd.append({"bbx": [0.0, 0.0, 1.0, 1.0], "easy": easy.tolist(),
                    "hard": hard.tolist(), "junk": junk.tolist()})
    annotation = {
        "imlist": [f"db_{i:05d}" for i in range(len(db_latent))],
        "qimlist": [f"query_{i:03d}" for i in range(len(query_landmark))],
        "gnd": gnd,
    }
    vectors = {
        "teacher_queries": teacher(query_latent),
        "teacher_database": teacher(db_latent),
        "student_queries": student(query_latent),
        "student_database": student(db_latent),
        "student_train": student(train_latent),
        "teacher_train": teacher(train_latent),
    }
    return annotation, vectors


def fit_linear_alignment(student: np.ndarray, teacher: np.ndarray, ridge: float = 1e-2):
    """Least-squares map W (D_s, D_t) minimising ‖student W − teacher‖² + ridge‖W‖²."""
    gram = student.T @ student + ridge * np.eye(student.shape[1])
    return np.linalg.solve(gram, student.T @ teacher)


def run_builtin_example(out: Path, seed: int = 0) -> dict[str, dict[str, float]]:
    """Write the example into ``out``, evaluate it, print and return mAP per setting."""
    annotation, vectors = make_example(seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gnd_example.pkl", "wb") as handle:
        pickle.dump(annotation, handle, protocol=3)
    alignment = fit_linear_alignment(vectors["student_train"], vectors["teacher_train"])
    aligned_queries = _normalise(vectors["student_queries"] @ alignment)
    for name in ("teacher_queries", "teacher_database", "student_queries", "student_database"):
        np.save(out / f"{name}.npy", vectors[name])
    np.save(out / "aligned_student_queries.npy", aligned_queries)

    settings = {
        "teacher → teacher (symmetric)": ("teacher_queries", "teacher_database"),
        "student → student (symmetric)": ("student_queries", "student_database"),
        "student → teacher (asymmetric)": ("student_queries", "teacher_database"),
        "aligned student → teacher": ("aligned_student_queries", "teacher_database"),
    }
    arrays = {**vectors, "aligned_student_queries": aligned_queries}
    results = {}
    print(f"{'setting':34s} {'mAP E':>7s} {'M':>7s} {'H':>7s}")
    for label, (queries, database) in settings.items():
        result = evaluate_retrieval(arrays[queries], arrays[database], annotation["gnd"])
        results[label] = dict(result.map)
        row = " ".join(f"{result.map[p]:7.2f}" for p in ("easy", "medium", "hard"))
        print(f"{label:34s} {row}")
    print(
        f"\nFiles in {out}/. Evaluate any pair yourself, e.g.\n  asymret evaluate-features "
        f"--gnd {out}/gnd_example.pkl --queries {out}/aligned_student_queries.npy "
        f"--database {out}/teacher_database.npy"
    )
    return results
