"""Where a replayed backward leaves the parameters' gradients, and how they
reach ``.grad``.

A captured backward writes each parameter's gradient into a static buffer;
these are views of one flat tensor per dtype and device (:class:`GradBlock`),
so that a step's gradients leave it as views of one copy, made by one
kernel. From there they reach ``.grad`` in one of two ways:

* through autograd: the replay node returns one gradient per parameter, and
  autograd puts each into ``.grad`` through a node of its own
  (AccumulateGrad). With the hundreds of parameters of a dynamic backbone,
  these nodes and the checks of what the replay node returned cost
  milliseconds of CPU a training step, in which the GPU runs out of work;
* directly: the replay node takes no parameters, and its backward writes
  ``.grad`` itself, as AccumulateGrad would have (a new gradient where
  there was none, added in place to one that is there).
"""
from typing import Dict, List, Optional

import torch
from torch import Tensor
from torch._utils import _unflatten_dense_tensors


class GradBlock:
    """The static gradient buffers of ``params``: the contiguous parameters
    of one dtype and device share one flat tensor, each of the others (e.g.
    channels-last weights) has a buffer with its own strides.

    Args:
        params (list[Tensor]): The parameters, each once.
    """

    def __init__(self, params: List[Tensor]) -> None:
        self.position = {id(p): i for i, p in enumerate(params)}
        groups: Dict[tuple, List[int]] = {}
        for i, param in enumerate(params):
            key = (param.dtype, param.device) if param.is_contiguous() \
                else i
            groups.setdefault(key, []).append(i)
        self.buffers: List[Optional[Tensor]] = [None] * len(params)
        #: (storage of the group's buffers, their positions, the parameters)
        self.groups = []
        for positions in groups.values():
            members = [params[i] for i in positions]
            if members[0].is_contiguous():
                data = members[0].new_empty(sum(p.numel() for p in members))
            else:
                data = torch.empty_like(members[0])
            self.groups.append((data, positions, members))
            for i, view in zip(positions, _views(data, members)):
                self.buffers[i] = view

    def buffer(self, param: Tensor) -> Tensor:
        """Where the backward writes ``param``'s gradient."""
        return self.buffers[self.position[id(param)]]

    def nbytes(self) -> int:
        return sum(data.numel() * data.element_size()
                   for data, _, _ in self.groups)

    def copies(self) -> List[Tensor]:
        """A copy of every buffer, as views of one new tensor per group:
        autograd keeps such a gradient as it is, which nothing else holds,
        rather than copying it again."""
        copies: List[Optional[Tensor]] = [None] * len(self.buffers)
        for data, positions, members in self.groups:
            for i, view in zip(positions, _views(data.clone(), members)):
                copies[i] = view
        return copies

    def gradients(self, params: List[Tensor],
                  has_grad: List[bool]) -> List[Optional[Tensor]]:
        """Copies of the gradients of ``params`` (None where ``has_grad``
        is False), for autograd to put into ``.grad``."""
        copies = self.copies()
        return [copies[self.position[id(p)]] if has else None
                for p, has in zip(params, has_grad)]

    def into_grad(self, params: List[Tensor], has_grad: List[bool]) -> None:
        """Put the gradients of ``params`` into their ``.grad`` as autograd
        would: a copy where ``.grad`` is None, added in place to a ``.grad``
        that is there (gradients accumulated over several backwards)."""
        copies = None
        accumulated, added = [], []
        for param, has in zip(params, has_grad):
            if not has:
                continue
            i = self.position[id(param)]
            if param.grad is None:
                if copies is None:
                    copies = self.copies()
                param.grad = copies[i]
            else:
                accumulated.append(param.grad)
                added.append(self.buffers[i])
        if accumulated:
            torch._foreach_add_(accumulated, added)


def _views(data: Tensor, members: List[Tensor]) -> List[Tensor]:
    """``data`` split into tensors shaped like ``members`` (``data`` itself
    for one member of its shape)."""
    if len(members) == 1 and data.shape == members[0].shape:
        return [data]
    return list(_unflatten_dense_tensors(data, members))


def have_grad_hooks(params: List[Tensor]) -> bool:
    """Whether a parameter has hooks that its AccumulateGrad node runs
    (``register_hook``, ``register_post_accumulate_grad_hook``)."""
    return any([
        p._backward_hooks or getattr(p, '_post_accumulate_grad_hooks', None)
        for p in params
    ])


def distributed() -> bool:
    """Whether a process group is initialised: DDP and its kind learn that
    a gradient is ready from hooks on the parameters' AccumulateGrad
    nodes, which a direct hand-over would leave out."""
    return torch.distributed.is_available() and \
        torch.distributed.is_initialized()
