import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arc_submit.augment import Augmentation, augmentation_set, dihedral, random_augmentation

grids = st.tuples(st.integers(1, 30), st.integers(1, 30)).flatmap(
    lambda shape: arrays(np.int8, shape, elements=st.integers(0, 9)))
augmentations = st.builds(
    lambda k, colours, order: Augmentation(k, tuple(colours), tuple(order)),
    st.integers(0, 7), st.permutations(range(10)), st.integers(1, 6).flatmap(lambda n: st.permutations(range(n))))


@settings(max_examples=300, deadline=None)
@given(grids, augmentations)
def test_inverse_of_forward_is_identity(grid, aug):
    assert np.array_equal(aug.invert_grid(aug.apply_grid(grid)), grid)
    assert np.array_equal(aug.apply_grid(aug.invert_grid(grid)), grid)
    assert aug.inverse().inverse() == aug


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 7), grids)
def test_dihedral_group_is_closed_and_shapes_follow(k, grid):
    out = dihedral(grid, k)
    assert sorted(out.shape) == sorted(grid.shape)
    assert sorted(out.ravel().tolist()) == sorted(grid.ravel().tolist())


def test_eight_dihedral_transforms_are_distinct():
    grid = np.arange(6, dtype=np.int8).reshape(2, 3)
    images = {dihedral(grid, k).tobytes() + bytes(dihedral(grid, k).shape) for k in range(8)}
    assert len(images) == 8


def test_task_round_trip_on_real_tasks(arc2_sample):
    rng = np.random.default_rng(0)
    for task in arc2_sample.values():
        for _ in range(5):
            aug = random_augmentation(rng, len(task.train))
            back = aug.invert_task(aug.apply_task(task))
            pairs = zip((*task.train, *task.test), (*back.train, *back.test))
            assert all(np.array_equal(a.input, b.input) and np.array_equal(a.output, b.output) for a, b in pairs)
            assert len(back.test) == len(task.test)


def test_keep_background_fixes_colour_zero():
    rng = np.random.default_rng(1)
    assert all(random_augmentation(rng, 3).colours[0] == 0 for _ in range(200))
    assert any(random_augmentation(rng, 3, keep_background=False).colours[0] != 0 for _ in range(200))


def test_augmentation_set_is_distinct_and_starts_with_identity():
    augs = augmentation_set(16, np.random.default_rng(2), n_train=3)
    assert augs[0].is_identity and len(set(augs)) == 16
    only_dihedral = augmentation_set(20, np.random.default_rng(3), permute_colours=False, permute_order=False)
    assert len(only_dihedral) == 8  # the space has only 8 members
