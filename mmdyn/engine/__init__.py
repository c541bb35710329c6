from .temperature_annealing_hook import TemperatureAnnealingHook

__all__ = ['TemperatureAnnealingHook']
