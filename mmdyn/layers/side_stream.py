"""A layer's input-independent work on a side CUDA stream, next to the work
that depends on the input.

Products of parameters alone (a folded BatchNorm, a scaled projection) do
not wait for the input, so they can run while the input's attention branch
does: on a GPU, where a dynamic layer's small kernels run one after the
other, that shortens the chain every layer waits for. Inside a captured
CUDA graph the two streams become parallel branches of the graph; autograd
runs each operation's backward on the stream of its forward and joins the
streams itself. On a CPU, under ``torch.compile`` and while tracing,
everything runs on the current stream.
"""
from typing import Dict, Sequence

import torch
from torch import Tensor

_STREAMS: Dict[int, 'torch.cuda.Stream'] = {}


def _side_stream(device: torch.device) -> 'torch.cuda.Stream':
    index = device.index if device.index is not None else \
        torch.cuda.current_device()
    if index not in _STREAMS:
        _STREAMS[index] = torch.cuda.Stream(index)
    return _STREAMS[index]


class SideStream:
    """Run the body of a ``with`` block on a side stream forked from the
    current one; :meth:`join` makes the current stream wait for it before
    using what the block computed.

    Example::

        side = SideStream(x.device)
        with side:
            constants = parameter_only_products()
        dynamics = attention_branch(x)  # meanwhile, on the current stream
        constants = side.join(constants)
    """

    def __init__(self, device: torch.device) -> None:
        self.active = (device.type == 'cuda'
                       and not torch.compiler.is_compiling()
                       and not torch.jit.is_tracing())
        if self.active:
            self.main = torch.cuda.current_stream(device)
            self.side = _side_stream(device)
            self._context = torch.cuda.stream(self.side)

    def __enter__(self) -> 'SideStream':
        if self.active:
            self.side.wait_stream(self.main)
            self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self._context.__exit__(*exc)

    def join(self, tensors: Sequence[Tensor]) -> Sequence[Tensor]:
        """``tensors`` (made in the block), ready for the current stream.
        Their memory is marked as used by it, so that the allocator does
        not hand it to the side stream again while they are read."""
        if self.active:
            self.main.wait_stream(self.side)
            for tensor in tensors:
                tensor.record_stream(self.main)
        return tensors
