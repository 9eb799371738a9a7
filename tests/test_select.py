import numpy as np

from arc_submit.candidates import Candidate
from arc_submit.select import select_attempts


def g(*rows):
    return np.array(rows, dtype=np.int8)


A, B, C, D = g([1]), g([2]), g([3]), g([4, 4])


def grids(choices):
    return [c.grid.tolist() for c in choices]


def test_votes_rank_within_a_solver_and_duplicates_merge():
    cands = [Candidate(A, "llm"), Candidate(B, "llm", count=3), Candidate(A.copy(), "llm"), Candidate(C, "llm")]
    picked = select_attempts(cands)
    assert grids(picked) == [[[2]], [[1]]]
    assert [c.votes for c in picked] == [3, 2]


def test_second_attempt_comes_from_the_next_solver_in_priority():
    cands = [Candidate(A, "llm", count=9), Candidate(B, "llm", count=8), Candidate(C, "icecuber", score=0.5)]
    assert grids(select_attempts(cands, priority=["icecuber", "llm"])) == [[[3]], [[1]]]
    assert grids(select_attempts(cands, priority=["llm", "icecuber"])) == [[[1]], [[3]]]


def test_agreement_between_solvers_wins():
    cands = [Candidate(A, "llm", count=9), Candidate(B, "llm", count=1), Candidate(B, "icecuber"),
             Candidate(C, "icecuber", score=5)]
    picked = select_attempts(cands, priority=["icecuber", "llm"])
    assert grids(picked)[0] == [[2]]
    assert picked[0].solvers == ("icecuber", "llm") and picked[0].per_solver_votes == {"llm": 1, "icecuber": 1}


def test_ties_are_broken_the_same_whatever_the_input_order():
    cands = [Candidate(x, "llm") for x in (A, B, C, D)]
    first = grids(select_attempts(cands))
    rng = np.random.default_rng(0)
    for _ in range(20):
        shuffled = [cands[i] for i in rng.permutation(len(cands))]
        assert grids(select_attempts(shuffled)) == first


def test_score_breaks_vote_ties_and_empty_input_gives_nothing():
    cands = [Candidate(A, "llm", score=-3.0), Candidate(B, "llm", score=-0.5)]
    assert grids(select_attempts(cands))[0] == [[2]]
    assert select_attempts([]) == []


def test_candidate_json_round_trip():
    c = Candidate(D, "induction", 0.75, 4, "prog-17")
    back = Candidate.from_json(c.to_json())
    assert np.array_equal(back.grid, D) and (back.solver, back.score, back.count, back.detail) == (
        "induction", 0.75, 4, "prog-17")
