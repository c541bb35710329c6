"""IterationSeedHook: the random numbers of an iteration depend on the seed,
the iteration and the rank only (tests/test_demo_pipeline.py checks that a
resumed run then ends with the same weights)."""
from types import SimpleNamespace

import torch
from mmdet.registry import HOOKS

import mmdyn  # noqa: F401
from mmdyn.engine import IterationSeedHook


def draws(hook, seed, iteration):
    hook.before_train_iter(SimpleNamespace(seed=seed, iter=iteration), 0)
    return torch.rand(3)


def test_same_iteration_same_numbers_whatever_came_before():
    hook = HOOKS.build(dict(type='IterationSeedHook'))
    first = draws(hook, 0, 5)
    torch.rand(100)  # e.g. a data loader iterator or validation in between
    assert torch.equal(draws(hook, 0, 5), first)
    assert not torch.equal(draws(hook, 0, 6), first)
    assert not torch.equal(draws(hook, 1, 5), first)


def test_seeds_differ_across_seed_iteration_and_rank():
    seeds = {IterationSeedHook.seed_for(seed, iteration, rank)
             for seed in (0, 1, 2**40) for iteration in range(50)
             for rank in range(8)}
    assert len(seeds) == 3 * 50 * 8
    assert all(0 <= s < 2**64 for s in seeds)
