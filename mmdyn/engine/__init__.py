from .iteration_seed_hook import IterationSeedHook
from .temperature_annealing_hook import TemperatureAnnealingHook
from .tool_config import (add_trust_argument, build_runner,
                          distributed_shut_down_at_exit, load_tool_config,
                          parse_runner_args)

__all__ = [
    'IterationSeedHook', 'TemperatureAnnealingHook', 'add_trust_argument',
    'build_runner', 'distributed_shut_down_at_exit', 'load_tool_config',
    'parse_runner_args'
]
