"""Model analysis: parameter and MAdd counts that include what dynamic
convolutions compute besides their convolution."""
from .complexity import (DYNAMIC_CONV_FLOP_HANDLES, DetectorComplexity,
                         count_flops, detector_complexity)

__all__ = [
    'DYNAMIC_CONV_FLOP_HANDLES', 'DetectorComplexity', 'count_flops',
    'detector_complexity'
]
