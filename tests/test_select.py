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


def test_slots_go_by_evidence_not_by_turns():
    """A solver's share of its own votes (or its stated support) is its evidence; priority only breaks ties."""
    cands = [Candidate(A, "llm", count=9), Candidate(B, "llm", count=1), Candidate(C, "icecuber", score=0.5)]
    assert grids(select_attempts(cands, priority=["llm", "icecuber"])) == [[[3]], [[1]]]  # 1.0 vs 0.9 vs 0.1
    sure = [Candidate(A, "llm", count=1, support=1.0), Candidate(C, "icecuber"), Candidate(D, "icecuber")]
    assert grids(select_attempts(sure))[0] == [[1]]  # a verified answer (support 1.0) beats icecuber's 1/2
    assert grids(select_attempts(sure, weights={"llm": 0.4})) == [[[3]], [[4, 4]]]  # weights scale the evidence


def test_a_one_vote_junk_grid_no_longer_displaces_icecubers_runner_up():
    """Seen before: with priority [transduction, induction, icecuber] a random model's 1-vote grid took attempt_1
    and icecuber's second answer (the truth) was lost; with three solvers icecuber got no slot at all."""
    junk = [Candidate(g([i]), "transduction", count=1, support=1 / 8) for i in range(5, 9)]
    program = [Candidate(g([9]), "induction", count=1, support=1 / 3)]  # fits one of three train pairs
    ice = [Candidate(A, "icecuber", score=2.0), Candidate(B, "icecuber", score=1.5)]  # B is the truth
    picked = select_attempts(junk + program + ice, priority=["transduction", "induction", "icecuber"])
    assert grids(picked) == [[[1]], [[2]]]
    assert [c.solvers for c in picked] == [("icecuber",), ("icecuber",)]
    confident = [Candidate(C, "transduction", count=6, support=6 / 8)] + junk + ice
    assert grids(select_attempts(confident)) == [[[3]], [[1]]]  # 6 of 8 samples agreeing do take attempt_1


def test_agreement_between_solvers_adds_up():
    cands = [Candidate(A, "llm"), Candidate(B, "llm"), Candidate(B, "icecuber"), Candidate(C, "icecuber", score=5)]
    picked = select_attempts(cands, priority=["icecuber", "llm"])
    assert grids(picked)[0] == [[2]] and picked[0].evidence == 1.0  # 1/2 from each
    assert picked[0].solvers == ("icecuber", "llm") and picked[0].per_solver_votes == {"llm": 1, "icecuber": 1}
    assert grids(picked)[1] == [[3]]  # then priority breaks the 1/2 tie: icecuber's C before llm's A


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


def test_report_shows_each_solvers_attempt_precision(arc2_sample):
    from arc_submit.report import attempt_precision
    from arc_submit.select import Choice

    tid, task = next(iter(arc2_sample.items()))
    truth = task.test[0].output
    wrong = np.zeros((1, 1), dtype=np.int8) if truth.shape != (1, 1) else np.ones((1, 1), dtype=np.int8)
    choices = {tid: [[Choice(wrong, 1, ("transduction",), 0.0), Choice(truth, 2, ("icecuber", "induction"), 0.0)]]}
    lines = attempt_precision({tid: task}, choices)
    assert lines == ["icecuber: attempt_1 0/0 right, attempt_2 1/1 right",
                     "induction: attempt_1 0/0 right, attempt_2 1/1 right",
                     "transduction: attempt_1 0/1 right, attempt_2 0/0 right"]
