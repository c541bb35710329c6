from .iteration_seed_hook import IterationSeedHook
from .temperature_annealing_hook import TemperatureAnnealingHook
from .test_time_aug import enable_tta
from .tool_config import (add_trust_argument, build_runner,
                          distributed_shut_down_at_exit, load_tool_config,
                          parse_runner_args)

__all__ = [
    'IterationSeedHook', 'TemperatureAnnealingHook', 'add_trust_argument',
    'build_runner', 'distributed_shut_down_at_exit', 'enable_tta',
    'load_tool_config', 'parse_runner_args'
]
