"""CUDA graphs for a module's forward and backward, one per input shape.

A dynamic backbone launches several times more, and smaller, GPU kernels
than a static one (each layer's attention branch and its gradient); at
detection's two images per GPU most of its time is spent launching them
from Python. :func:`enable_cuda_graph` captures the module's forward (and,
when training, its backward) once per input shape and then replays the
captured kernels: the results are those of the module run eagerly, the
launch cost is gone.

How the memory stays small however many shapes are captured:

* every capture allocates from one private memory pool, and keeps nothing of
  it alive afterwards: outputs are copied into a static buffer outside the
  pool, parameter gradients into static buffers that every graph shares
  (:class:`mmdyn.runtime.grad_block.GradBlock`). The next capture reuses
  the same pool memory, so the pool holds about one eager forward and
  backward, not one per shape;
* replaying a graph then overwrites what another graph left in the pool,
  which is safe because only one graph is in use at a time: a second call
  while a training replay still waits for its backward runs eagerly.
* the static buffers are sized for the largest input yet; a larger one
  drops every graph (they point into the old buffers) and their pool, and
  the graphs are captured again as their shapes come.

Inputs can be padded up to a multiple of ``size_divisor`` (bottom and right,
with zeros, as MMDetection pads a batch), so that nearby shapes share a
graph; the outputs are cropped back to what the unpadded input gives. The
padding changes the numbers slightly (dynamic layers pool over the whole
padded image), so it is off by default.

A graph holds for one *state* of the module: what its forward reads besides
the input, derived rather than listed (:meth:`CUDAGraphForward.state`):
every submodule's train / eval mode, which parameters require grad, the
Python values stored on mmdyn's dynamic layers (their temperature, and any
setting added later), the fused-op mode of :mod:`mmdyn.ops.dispatch`, and
the backend flags that choose GPU kernels. Python values kept on other
modules (e.g. a BatchNorm's ``eps``) are not watched: after changing one,
call :meth:`CUDAGraphForward.clear`.
"""
import contextlib
import gc
import math
import operator
import warnings
import weakref
from collections import Counter, OrderedDict
from contextlib import nullcontext
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._compat import foreach_copy_, global_hooks, module_hook_dicts
from ..layers import BaseDynamicConv2d
from ..ops.dispatch import fused_ops_mode, tracing_or_compiling
from .grad_block import GradBlock

Outputs = Union[Tensor, Tuple[Tensor, ...], List[Tensor]]

#: ``capture_error_mode`` of the captures
CAPTURE_ERROR_MODE = 'thread_local'
#: the types of the Python values on a layer that key its graphs
_PLAIN = (bool, int, float, str, type(None))


def _plain(value) -> bool:
    """A Python value a forward may branch on: a scalar, a string, None or
    a tuple of them (tensors, modules and containers are not)."""
    if type(value) is tuple:
        return all(type(v) in _PLAIN for v in value)
    return type(value) in _PLAIN


def bucket_shape(height: int, width: int,
                 size_divisor: Optional[int]) -> Tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``size_divisor``
    (unchanged for None)."""
    if size_divisor is None:
        return height, width
    return (math.ceil(height / size_divisor) * size_divisor,
            math.ceil(width / size_divisor) * size_divisor)


def crop_sizes(output_sizes: List[Tuple[int, ...]], bucket: Tuple[int, int],
               size: Tuple[int, int]) -> Optional[List[Tuple[int, ...]]]:
    """The spatial sizes that outputs of ``output_sizes`` for an input of
    ``bucket`` (H, W) have for an input of ``size``: scaled by the same
    stride. None if an output's stride does not divide ``size`` (a padded
    input then gives outputs that no crop turns into the unpadded ones)."""
    crops = []
    for out_size in output_sizes:
        if len(out_size) < 3:  # not a feature map: nothing to crop
            if size != bucket:
                return None
            crops.append(out_size)
            continue
        crop = []
        for out, whole, part in zip(out_size[-2:], bucket, size):
            if out * part % whole:
                return None
            crop.append(out * part // whole)
        crops.append(tuple(out_size[:-2]) + tuple(crop))
    return crops


class _Arena:
    """One flat CUDA buffer outside the graphs' pool, handed out as views;
    every graph gets the same views from offset 0, as only one graph is
    replayed at a time."""

    ALIGN = 512

    def __init__(self, device: torch.device, nbytes: int) -> None:
        self.data = torch.empty(nbytes, dtype=torch.uint8, device=device)

    @classmethod
    def nbytes(cls, tensors: List[Tensor]) -> int:
        return sum(cls._padded(t) for t in tensors)

    @classmethod
    def _padded(cls, tensor: Tensor) -> int:
        """Bytes a view with the tensor's shape and strides spans, rounded
        up to :attr:`ALIGN`."""
        span = 1 + sum((size - 1) * stride for size, stride in zip(
            tensor.shape, tensor.stride())) if tensor.numel() else 0
        return -(-span * tensor.element_size() // cls.ALIGN) * cls.ALIGN

    def views_like(self, tensors: List[Tensor], offset: int = 0
                   ) -> List[Tensor]:
        """Views with the shapes, strides and dtypes of ``tensors``."""
        views = []
        for tensor in tensors:
            size = self._padded(tensor)
            chunk = self.data[offset:offset + size].view(tensor.dtype)
            views.append(chunk.as_strided(tensor.shape, tensor.stride()))
            offset += size
        return views


class _Structure:
    """A module's submodules and parameters, walked once (at the first call
    and at every train / eval switch): reading their state from these lists
    on every call is fast, walking is not."""

    def __init__(self, root: nn.Module) -> None:
        self.modules = list(root.modules())
        self.params = list(root.parameters())
        # the dynamic layers' plain Python values (temperature, settings):
        # their names are read here, again when a layer gains an attribute
        self.layer_settings = [_settings(vars(m)) for m in self.modules
                               if isinstance(m, BaseDynamicConv2d)]
        self.sync_batch_norms = [m for m in self.modules
                                 if isinstance(m, nn.SyncBatchNorm)]
        # registering a hook adds it to one of these dicts: looking at them
        # is several times faster than at the modules' attributes
        self.hook_dicts = [d for m in self.modules
                           for d in module_hook_dicts(m)]
        self.last_flags = None

    def flags(self) -> tuple:
        return tuple([m.training for m in self.modules])

    def hooked(self) -> bool:
        return any(self.hook_dicts) or global_hooks()

    def layer_values(self) -> tuple:
        """The Python values stored on the dynamic layers (temperature and
        whatever else their forward may read): a value that changes, or a
        new one, makes a new state, whichever it is."""
        settings = self.layer_settings
        for i, (values, _, size) in enumerate(settings):
            if len(values) != size:
                settings[i] = _settings(values)
        return tuple([get(values) for values, get, _ in settings])


def _settings(values: dict) -> tuple:
    """(a layer's ``vars``, a getter of its plain values, how many
    attributes it had)."""
    names = [name for name, value in values.items() if _plain(value)]
    return values, operator.itemgetter(*names), len(values)


class _PendingBackward:
    """Lives as long as a training replay's autograd graph; ``done`` once
    its backward has run."""
    done = False


class ShapeGraph:
    """The captured forward (and backward) of a module for one input
    shape, dtype and module state. Built by :class:`CUDAGraphForward`."""

    def __init__(self, forward: Callable[[Tensor], Outputs],
                 module: nn.Module, params: List[Tensor], example: Tensor,
                 bucket: Tuple[int, int], with_backward: bool,
                 owner: 'CUDAGraphForward') -> None:
        self.bucket = bucket
        self.params = [p for p in params if p.requires_grad
                       ] if with_backward else []
        buffers = list(module.buffers())
        saved = [b.clone() for b in buffers]
        try:
            with _parameters_as_new_leaves(module) as leaves:
                self.leaves = [leaves[id(p)] for p in self.params]
                self._capture(forward, example, with_backward, owner)
        finally:
            self.__dict__.pop('leaves', None)
            with torch.no_grad():  # warm-ups and capture take no step
                for buffer, value in zip(buffers, saved):
                    buffer.copy_(value)

    def _capture(self, forward, example, with_backward, owner) -> None:
        device = example.device
        spec = torch.empty(tuple(example.shape[:-2]) + self.bucket,
                           dtype=example.dtype, device=device)
        need_input_grad = with_backward and example.requires_grad
        inputs = [spec, spec] if need_input_grad else [spec]
        owner.reserve('inputs', inputs)
        views = owner.arenas['inputs'].views_like(inputs)
        self.static_input = views[0]
        self.static_input_grad = views[1] if need_input_grad else None
        self._fill_input(example)
        self.static_input.requires_grad_(need_input_grad)

        def autocast():
            return _autocast_context(device)

        def grad_mode():
            return torch.set_grad_enabled(with_backward)

        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), autocast(), grad_mode():
            for _ in range(owner.warmup_iters):
                outputs = _flatten(forward(self.static_input))
                if with_backward:
                    self._gradients(outputs,
                                    [torch.zeros_like(o) for o in outputs])
        torch.cuda.current_stream(device).wait_stream(stream)
        self.output_sizes = [tuple(o.shape) for o in outputs]
        owner.reserve('outputs', outputs)  # sized from a warm-up's outputs
        self.static_outputs = owner.arenas['outputs'].views_like(outputs)
        del outputs

        if owner.pool is None:
            owner.pool = torch.cuda.graph_pool_handle()
        self.forward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=owner.pool,
                              capture_error_mode=CAPTURE_ERROR_MODE), \
                autocast(), grad_mode():
            result = forward(self.static_input)
            outputs = _flatten(result)
            with torch.no_grad():
                for static, output in zip(self.static_outputs, outputs):
                    static.copy_(output)
        self.structure = _structure(result)
        self.differentiable = [o.requires_grad for o in outputs]
        del result

        self.backward_graph = None
        if with_backward:
            # the gradients of the outputs take the outputs' place: those
            # are copied out right after the forward replay
            self.static_grad_outputs = self.static_outputs
            self.grad_block = owner.gradient_block()
            self.grad_buffers = [self.grad_block.buffer(p)
                                 for p in self.params]
            targets = ([self.static_input_grad] if need_input_grad else
                       []) + self.grad_buffers
            self.backward_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.backward_graph, pool=owner.pool,
                                  capture_error_mode=CAPTURE_ERROR_MODE):
                grads = self._gradients(outputs, self.static_grad_outputs)
                pairs = [(t, g) for t, g in zip(targets, grads)
                         if g is not None]
                with torch.no_grad():  # a few kernels, not one per tensor
                    foreach_copy_([t for t, _ in pairs],
                                  [g for _, g in pairs])
            has_grad = [g is not None for g in grads]
            self.input_has_grad = need_input_grad and has_grad.pop(0)
            self.param_has_grad = has_grad
            del grads

    def _fill_input(self, x: Tensor) -> None:
        """Copy ``x`` into the static input, zeros around it."""
        with torch.no_grad():
            if tuple(x.shape[-2:]) != self.bucket:
                self.static_input.zero_()
            self.static_input[_region(x.shape)].copy_(x)

    def _gradients(self, outputs: List[Tensor], grad_outputs: List[Tensor]):
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs)
                 if o.requires_grad]
        inputs = ([self.static_input] if self.static_input.requires_grad else
                  []) + self.leaves
        return torch.autograd.grad([o for o, _ in pairs],
                                   inputs,
                                   grad_outputs=[g for _, g in pairs],
                                   allow_unused=True)

    def crops(self, size: Tuple[int, int]) -> Optional[list]:
        return crop_sizes(self.output_sizes, self.bucket, size)

    def replay_forward(self, x: Tensor, crops: list) -> List[Tensor]:
        self._fill_input(x)
        with torch.no_grad():
            self.forward_graph.replay()
            return [
                static[_region(crop)].clone()
                for static, crop in zip(self.static_outputs, crops)
            ]

    def replay_backward(self, grads, crops, size) -> Optional[Tensor]:
        """Replay the backward for the outputs' gradients ``grads``; returns
        the input's gradient (or None), leaves the parameters' in the
        owner's :class:`GradBlock`."""
        with torch.no_grad():
            for static, grad, crop, differentiable in zip(
                    self.static_grad_outputs, grads, crops,
                    self.differentiable):
                if not differentiable:
                    continue
                if crop != static.shape:
                    static.zero_()
                static[_region(crop)].copy_(grad)
            self.backward_graph.replay()
        if not self.input_has_grad:
            return None
        return self.static_input_grad[..., :size[0], :size[1]].clone()


@contextlib.contextmanager
def _parameters_as_new_leaves(module: nn.Module) -> Iterator[dict]:
    """While capturing, every parameter is swapped for a new leaf on the
    same memory (yields them by the original's id). A parameter's own
    autograd node may be alive from earlier (an autograd graph kept by a
    tensor, DDP's hooks) and tied to the stream it was made on; the capture
    would then synchronise with that stream, which breaks it."""
    leaves, swapped = {}, []
    for owner in module.modules():
        for name, param in owner.named_parameters(recurse=False):
            if id(param) not in leaves:
                leaves[id(param)] = nn.Parameter(
                    param.detach(), requires_grad=param.requires_grad)
            swapped.append((owner, name, param))
    for owner, name, param in swapped:
        setattr(owner, name, leaves[id(param)])
    try:
        yield leaves
    finally:
        for owner, name, param in swapped:
            setattr(owner, name, param)


def _region(size) -> tuple:
    return tuple(slice(0, s) for s in size)


def _flatten(outputs: Outputs) -> List[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)) and all(
            isinstance(o, Tensor) for o in outputs):
        return list(outputs)
    raise TypeError(
        'cuda_graph: the module must return a tensor or a tuple / list of '
        f'tensors, got {type(outputs).__name__}')


def _structure(outputs: Outputs) -> type:
    return Tensor if isinstance(outputs, Tensor) else type(outputs)


def _autocast_context(device: torch.device):
    """The caller's autocast, without its cast cache: a cast cached during
    capture would be freed, and its memory reused, after it."""
    if not torch.is_autocast_enabled(device.type):
        return nullcontext()
    return torch.autocast(device.type,
                          dtype=torch.get_autocast_dtype(device.type),
                          cache_enabled=False)


class _Replay(torch.autograd.Function):
    """A training replay as one autograd node: forward replays the forward
    graph, backward the backward graph. Its inputs after ``x`` are the
    graph's parameters, whose gradients it returns to autograd."""

    @staticmethod
    def forward(ctx, graph, crops, token, x, *params):
        ctx.graph, ctx.crops, ctx.token = graph, crops, token
        ctx.size = tuple(x.shape[-2:])
        outputs = graph.replay_forward(x, crops)
        ctx.mark_non_differentiable(*(
            o for o, d in zip(outputs, graph.differentiable) if not d))
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        ctx.token.done = True
        graph = ctx.graph
        grad_input = graph.replay_backward(grads, ctx.crops, ctx.size)
        return (None, None, None, grad_input) + tuple(
            graph.grad_block.gradients(graph.params, graph.param_has_grad))


class CUDAGraphForward:
    """Stands in for ``module.forward`` (see :func:`enable_cuda_graph`):
    replays a CUDA graph captured for the input's shape, or runs the module
    eagerly where a graph cannot stand in for it.

    A graph is captured per input shape (rounded up to ``size_divisor``),
    dtype, grad mode, autocast and module :meth:`state`; moving the
    module's parameters drops its graphs. The submodules themselves are
    looked at on the first call and at every train / eval switch: after
    replacing one, call :meth:`clear`.

    Eager calls, counted by reason in :attr:`stats`: inputs not on a CUDA
    device; under ``torch.compile``, tracing or another capture; a second
    call while a training replay waits for its backward; ``max_graphs``
    graphs already captured; hooks on submodules (they would not run in a
    replay); SyncBatchNorm in training mode (its collectives). All but the
    first two warn once.

    Args:
        module (nn.Module): The module whose ``forward(x)`` takes one
            tensor (N, C, H, W) and returns a tensor or a tuple of tensors.
        size_divisor (int, optional): Pad inputs (bottom, right, zeros) to
            multiples of this, so that nearby shapes share a graph; the
            outputs are cropped to what the unpadded input gives. This
            changes the results slightly: a dynamic layer pools over the
            padded image. Default: None (no padding; every shape its own
            graph, results as eager).
        max_graphs (int): Graphs kept at most; a shape beyond runs eagerly.
            Default: 64.
        warmup_iters (int): Eager runs before a capture (library
            initialisation and cuDNN's algorithm search happen there).
            Default: 2.
    """

    def __init__(self,
                 module: nn.Module,
                 size_divisor: Optional[int] = None,
                 max_graphs: int = 64,
                 warmup_iters: int = 2) -> None:
        for name, value, minimum in (('max_graphs', max_graphs, 1),
                                     ('warmup_iters', warmup_iters, 1)):
            if not isinstance(value, int) or isinstance(value, bool) \
                    or value < minimum:
                raise ValueError(f'cuda_graph: {name} must be an int >= '
                                 f'{minimum}, got {value!r}')
        if size_divisor is not None and (
                not isinstance(size_divisor, int)
                or isinstance(size_divisor, bool) or size_divisor < 1):
            raise ValueError('cuda_graph: size_divisor must be None (no '
                             'padding) or an int >= 1, got '
                             f'{size_divisor!r}')
        # weak: the module holds this as its forward, and a cycle would
        # leave its graphs to the garbage collector, which can run while
        # another graph is being captured
        self._module = weakref.ref(module)
        self.size_divisor = size_divisor
        self.max_graphs = max_graphs
        self.warmup_iters = warmup_iters
        self._reset_state()

    def _reset_state(self) -> None:
        self.graphs: 'OrderedDict[tuple, ShapeGraph]' = OrderedDict()
        self.arenas: Dict[str, _Arena] = {}
        self._grad_block: Optional[GradBlock] = None
        self.pool = None
        self.stats = Counter()
        self._structure: Optional[_Structure] = None
        self._pointers = None
        self._pending = None
        self._warned = set()

    def clear(self) -> None:
        """Drop every graph and static buffer (they are captured again as
        needed), and look at the module's submodules and parameters anew:
        call it after replacing a submodule or changing a Python value on
        a module other than mmdyn's layers."""
        self._drop_graphs()
        self.arenas.clear()
        self._grad_block = None
        self._structure = None

    def memory_bytes(self) -> int:
        """Device memory the graphs hold: their pool (reserved for the
        activations of the captured forward and backward) and the static
        buffers (inputs, outputs, parameter gradients)."""
        total = sum(a.data.numel() for a in self.arenas.values())
        if self._grad_block is not None:
            total += self._grad_block.nbytes()
        if self.pool is not None:
            total += sum(segment['total_size']
                         for segment in torch.cuda.memory_snapshot()
                         if tuple(segment.get('segment_pool_id', ()))
                         == tuple(self.pool))
        return total

    # copies (deepcopy, pickle) start without graphs
    def __getstate__(self) -> dict:
        return dict(module=self.module, size_divisor=self.size_divisor,
                    max_graphs=self.max_graphs,
                    warmup_iters=self.warmup_iters)

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        self._module = weakref.ref(state.pop('module'))
        self.__dict__.update(state)
        self._reset_state()

    @property
    def module(self) -> nn.Module:
        module = self._module()
        if module is None:
            raise RuntimeError('cuda_graph: the module of this forward was '
                               'deleted')
        return module

    def __repr__(self) -> str:
        return (f'CUDAGraphForward(size_divisor={self.size_divisor}, '
                f'max_graphs={self.max_graphs}, graphs={len(self.graphs)})')

    def eager(self, x: Tensor) -> Outputs:
        return type(self.module).forward(self.module, x)

    def __call__(self, x: Tensor, *args, **kwargs) -> Outputs:
        if args or kwargs or not isinstance(x, Tensor) or x.dim() < 3:
            raise TypeError(
                'cuda_graph: the module is called as forward(x), x one '
                '(N, C, H, W) tensor; got other arguments. Turn cuda_graph '
                'off for this module.')
        reason = self._eager_reason(x)
        if reason is not None:
            return self._run_eagerly(x, reason)
        reason, state = self.state()
        if reason is not None:
            return self._run_eagerly(x, reason)
        with_backward = torch.is_grad_enabled() and (
            x.requires_grad or any(state[1]))
        size = tuple(x.shape[-2:])
        common = (tuple(x.shape[:-2]), x.dtype, x.device, x.requires_grad,
                  with_backward, _autocast_key(x.device), state)
        bucket = bucket_shape(*size, self.size_divisor)
        graph = self._graph(common, bucket, x, with_backward)
        if graph is None:
            return self._run_eagerly(x, 'max_graphs')
        crops = graph.crops(size)
        if crops is None:  # the outputs of a padded input cannot be cropped
            self._warn_once(
                'crop', f'cuda_graph: inputs of {size[0]}x{size[1]} are not '
                f'multiples of the outputs\' strides; size_divisor '
                f'{self.size_divisor} cannot pad them, so each such shape '
                'gets its own graph. Pad images to 32 (DetDataPreprocessor '
                'pad_size_divisor=32) to share graphs.')
            graph = self._graph(common, size, x, with_backward)
            if graph is None:
                return self._run_eagerly(x, 'max_graphs')
            crops = graph.crops(size)
        self.stats['replays'] += 1
        if not with_backward:
            outputs = graph.replay_forward(x, crops)
        else:
            token = _PendingBackward()
            self._pending = weakref.ref(token)
            outputs = _Replay.apply(graph, crops, token, x, *graph.params)
        if graph.structure is Tensor:
            return outputs[0]
        return graph.structure(outputs)

    def _eager_reason(self, x: Tensor) -> Optional[str]:
        if not x.is_cuda:
            return 'not_cuda'
        if tracing_or_compiling():
            return 'compiling'
        if torch.cuda.is_current_stream_capturing():
            return 'capturing'
        pending = self._pending() if self._pending is not None else None
        if pending is not None and not pending.done:
            return 'pending_backward'
        return None

    _WARNINGS = {
        'not_cuda': 'inputs are not on a CUDA device, so the module runs '
        'eagerly (CUDA graphs are CUDA-only)',
        'pending_backward': 'called again before the backward of its '
        'previous call; this call runs eagerly (a replay would overwrite '
        'the activations that backward needs)',
        'max_graphs': 'max_graphs ({max_graphs}) shapes captured already; '
        'new shapes run eagerly. Raise max_graphs or pad inputs to fewer '
        'shapes with size_divisor',
        'hooks': 'a submodule has forward or backward hooks, which a replay '
        'would not run; the module runs eagerly while they are there',
        'sync_bn': 'SyncBatchNorm in training mode runs collectives across '
        'processes, which are not captured; the module runs eagerly (use '
        'BN, or SyncBN with norm_eval=True)',
    }

    def _run_eagerly(self, x: Tensor, reason: str) -> Outputs:
        self.stats[f'eager_{reason}'] += 1
        if reason in self._WARNINGS:
            self._warn_once(reason, 'cuda_graph: ' + self._WARNINGS[
                reason].format(max_graphs=self.max_graphs))
        return self.eager(x)

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(message, stacklevel=3)

    def state(self) -> Tuple[Optional[str], tuple]:
        """What the module's forward reads besides its input (a graph holds
        for one value of it), or the reason why no graph can stand in for
        it: ``(None, state)`` or ``(reason, ())``.

        The state is derived, not listed: every submodule's train / eval
        mode, which parameters require grad, the Python values stored on
        mmdyn's dynamic layers, the fused-op mode of
        :mod:`mmdyn.ops.dispatch` and the backend flags that choose GPU
        kernels."""
        structure = self._structure
        flags = None if structure is None else structure.flags()
        if structure is None or flags != structure.last_flags:
            # a train / eval switch: the structure is walked again then
            structure = self._structure = _Structure(self.module)
            flags = structure.last_flags = structure.flags()
        if structure.hooked():
            return 'hooks', ()
        if any([m.training for m in structure.sync_batch_norms]):
            return 'sync_bn', ()
        pointers = tuple([p.data_ptr() for p in structure.params])
        if pointers != self._pointers:
            # moved or replaced tensors: graphs would read stale memory
            self.clear()
            self._structure, self._pointers = structure, pointers
        backends = (torch.backends.cudnn.allow_tf32,
                    torch.backends.cuda.matmul.allow_tf32,
                    torch.backends.cudnn.deterministic,
                    torch.backends.cudnn.benchmark,
                    torch.are_deterministic_algorithms_enabled())
        requires_grad = tuple([p.requires_grad for p in structure.params])
        return None, (flags, requires_grad, structure.layer_values(),
                      fused_ops_mode(), backends)

    def _graph(self, common: tuple, bucket: Tuple[int, int], x: Tensor,
               with_backward: bool) -> Optional['ShapeGraph']:
        key = common + (bucket, )
        graph = self.graphs.get(key)
        if graph is not None:
            return graph
        if len(self.graphs) >= self.max_graphs:
            return None
        graph = self._capture(x, bucket, with_backward)
        self.graphs[key] = graph
        self.stats['captures'] += 1
        return graph

    def _capture(self, x: Tensor, bucket: Tuple[int, int],
                 with_backward: bool) -> 'ShapeGraph':
        # garbage collected during a capture may free CUDA memory or other
        # graphs, which invalidates the capture
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        args = (self.eager, self.module, self._structure.params, x, bucket,
                with_backward, self)
        try:
            try:
                return ShapeGraph(*args)
            except _ArenaGrown:
                # the static buffers grew: earlier graphs point into the old
                # ones, so they go (and are captured again when needed)
                self._drop_graphs()
                return ShapeGraph(*args)
        finally:
            if enabled:
                gc.enable()

    def _drop_graphs(self) -> None:
        """Drop every graph, and their pool with them: a pool that no
        graph uses any more cannot take another capture (PyTorch's
        allocator asserts), so the next capture starts a new one."""
        self.graphs.clear()
        self.pool = None

    def reserve(self, name: str, tensors: List[Tensor]) -> None:
        """Make the arena ``name`` hold ``tensors``; raises
        :class:`_ArenaGrown` if it had to grow while graphs used it."""
        needed = _Arena.nbytes(tensors)
        arena = self.arenas.get(name)
        if arena is not None and arena.data.numel() >= needed:
            return
        self.arenas[name] = _Arena(
            tensors[0].device,
            needed if arena is None else max(needed, arena.data.numel() * 5
                                             // 4))
        if arena is not None and self.graphs:
            raise _ArenaGrown

    def gradient_block(self) -> GradBlock:
        """Where the backward graphs write the parameters' gradients."""
        if self._grad_block is None:
            self._grad_block = GradBlock(self._structure.params)
        return self._grad_block


class _ArenaGrown(Exception):
    pass


def _autocast_key(device: torch.device) -> tuple:
    if not torch.is_autocast_enabled(device.type):
        return ()
    return (torch.get_autocast_dtype(device.type), )


def enable_cuda_graph(module: nn.Module, **kwargs) -> CUDAGraphForward:
    """Make ``module``'s forward (and backward) replay CUDA graphs.

    ``module.forward`` becomes a :class:`CUDAGraphForward` (keyword
    arguments go there); the module's parameters, buffers and state dict
    stay as they are. Returns it (its ``stats`` count captures, replays and
    eager calls).
    """
    if 'forward' in vars(module):
        raise ValueError(
            f'cuda_graph: {type(module).__name__}.forward is replaced '
            'already (cuda_graph enabled twice, or another wrapper); call '
            'disable_cuda_graph first')
    if getattr(module, 'with_cp', False):
        raise ValueError(
            f'{type(module).__name__}: cuda_graph and with_cp=True do not go '
            'together: with_cp recomputes activations in backward to save '
            'memory, a graph replays a fixed backward. Turn one off.')
    graphed = CUDAGraphForward(module, **kwargs)
    module.forward = graphed
    return graphed


def disable_cuda_graph(module: nn.Module) -> None:
    """Undo :func:`enable_cuda_graph`; the module's graphs are freed."""
    graphed = vars(module).get('forward')
    if not isinstance(graphed, CUDAGraphForward):
        raise ValueError(
            f'cuda_graph: {type(module).__name__} has no CUDA graphs enabled')
    graphed.clear()
    del module.forward


def get_cuda_graph(module: nn.Module) -> Optional[CUDAGraphForward]:
    """The :class:`CUDAGraphForward` of ``module``, or None."""
    graphed = vars(module).get('forward')
    return graphed if isinstance(graphed, CUDAGraphForward) else None
