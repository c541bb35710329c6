"""Random numbers that depend on the iteration, not on the run's history."""
import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from ..registry import register_hook


@register_hook
class IterationSeedHook(Hook):
    """Seed PyTorch's generators (CPU and every GPU) before each training
    iteration from the run's seed, the iteration and the rank.

    The detectors draw random numbers while training (the RPN and R-CNN
    samplers), and so do things outside the model: each new data loader
    iterator takes a seed from PyTorch's generator, validation builds one,
    and a resumed run skips what happened before its checkpoint. Without
    this hook, a run resumed from a checkpoint therefore samples
    differently from the same run trained straight through; with it, both
    draw the same numbers at every iteration, and on a CPU (or with
    deterministic GPU kernels) end with identical weights.

    The data pipeline's own randomness (numpy, in data loader workers that
    MMEngine seeds) is replayed on resume by MMEngine, and not touched here.

    Add it to a config::

        custom_hooks = [dict(type='IterationSeedHook')]
    """

    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        torch.manual_seed(self.seed_for(runner.seed, runner.iter, get_rank()))

    @staticmethod
    def seed_for(seed: int, iteration: int, rank: int) -> int:
        """A 64-bit seed of its own for every (seed, iteration, rank), from
        numpy's SeedSequence (which hashes the three)."""
        entropy = [seed % 2**64, iteration, rank]
        return int(np.random.SeedSequence(entropy).generate_state(
            1, np.uint64)[0])
