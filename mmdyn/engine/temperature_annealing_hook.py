"""Temperature annealing of the dynamic convolutions during training."""
from typing import Optional

from mmengine.hooks import Hook

from ..layers import set_temperature
from ..layers.base import check_temperature
from ..registry import register_hook


@register_hook
class TemperatureAnnealingHook(Hook):
    """Lower the temperature of every dynamic conv linearly, iteration by
    iteration, then hold it: the papers' ImageNet schedule is 30 -> 1 over
    the first 10 epochs. Detection fine-tuning does not anneal (temperature
    stays 1), so mmdyn's configs do not use this hook; add it for training
    from scratch::

        custom_hooks = [dict(type='TemperatureAnnealingHook',
                             start=30.0, end=1.0, by_epoch=True, length=10)]

    Args:
        start (float): Temperature at the first iteration. Default: 30.
        end (float): Temperature from the end of annealing on. Default: 1.
        length (int): Length of the annealing, in epochs if ``by_epoch`` else
            in iterations. Default: 10.
        by_epoch (bool): Whether ``length`` counts epochs (converted to
            iterations with the length of the train dataloader).
            Default: True.
    """

    priority = 'NORMAL'

    def __init__(self, start: float = 30.0, end: float = 1.0,
                 length: int = 10, by_epoch: bool = True) -> None:
        self.start = check_temperature('TemperatureAnnealingHook start',
                                       start)
        self.end = check_temperature('TemperatureAnnealingHook end', end)
        if not isinstance(length, int) or length < 1:
            raise ValueError(f'TemperatureAnnealingHook: length must be a '
                             f'positive int, got {length!r}')
        self.length = length
        self.by_epoch = by_epoch
        self.total_iters: Optional[int] = None

    def temperature_at(self, iteration: int) -> float:
        """Temperature at (0-based) ``iteration``."""
        progress = min(iteration / self.total_iters, 1.0)
        return self.start + (self.end - self.start) * progress

    def before_train(self, runner) -> None:
        self.total_iters = self.length
        if self.by_epoch:
            self.total_iters *= len(runner.train_dataloader)
        if not set_temperature(runner.model, self.temperature_at(runner.iter)):
            runner.logger.warning(
                'TemperatureAnnealingHook: the model has no dynamic conv; '
                'the hook does nothing')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        set_temperature(runner.model, self.temperature_at(runner.iter))
