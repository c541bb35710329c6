"""Where a replayed backward leaves the parameters' gradients.

A captured backward writes each parameter's gradient into a static buffer.
The buffers of the contiguous parameters of one dtype and device are views
of one flat tensor, so that a step's gradients leave it as views of one
copy, made by one GPU kernel, not one copy per parameter (hundreds of them
for a dynamic backbone); autograd then puts each into ``.grad``.
"""
from typing import Dict, List, Optional

import torch
from torch import Tensor


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

    def gradients(self, params: List[Tensor],
                  has_grad: List[bool]) -> List[Optional[Tensor]]:
        """Copies of the gradients of ``params`` (None where ``has_grad``
        is False) for autograd to put into ``.grad``: views of one new
        tensor per group, which autograd keeps as they are (nothing else
        holds them) rather than copying them again."""
        copies: List[Optional[Tensor]] = [None] * len(self.buffers)
        for data, positions, members in self.groups:
            for i, view in zip(positions, _views(data.clone(), members)):
                copies[i] = view
        return [copies[self.position[id(p)]] if has else None
                for p, has in zip(params, has_grad)]


def _views(data: Tensor, members: List[Tensor]) -> List[Tensor]:
    """``data`` split into consecutive tensors shaped like ``members``
    (``data`` itself for one member of its shape)."""
    if len(members) == 1 and data.shape == members[0].shape:
        return [data]
    views, offset = [], 0
    for member in members:
        views.append(data[offset:offset + member.numel()].view_as(member))
        offset += member.numel()
    return views
