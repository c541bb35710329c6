"""Whether a module's hooks would be skipped by a path that computes its
forward some other way."""
from torch import nn


def has_hooks(module: nn.Module) -> bool:
    """Forward or backward hooks on ``module``, or global forward hooks."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks or module._backward_pre_hooks
                or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)
