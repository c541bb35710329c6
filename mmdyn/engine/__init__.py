from .temperature_annealing_hook import TemperatureAnnealingHook
from .tool_config import build_runner, load_tool_config, parse_runner_args

__all__ = [
    'TemperatureAnnealingHook', 'build_runner', 'load_tool_config',
    'parse_runner_args'
]
