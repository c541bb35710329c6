"""Model analysis: parameter and MAdd counts that include what dynamic
convolutions compute besides their convolution, and statistics and plots of
their attentions."""
from .attention_plots import plot_attention_summary
from .attention_stats import AttentionRecorder, summarize
from .complexity import (DYNAMIC_CONV_FLOP_HANDLES, DetectorComplexity,
                         count_flops, detector_complexity)

__all__ = [
    'DYNAMIC_CONV_FLOP_HANDLES', 'DetectorComplexity', 'count_flops',
    'detector_complexity', 'AttentionRecorder', 'summarize',
    'plot_attention_summary'
]
