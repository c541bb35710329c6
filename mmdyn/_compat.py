"""Every access mmdyn makes to a private part of PyTorch, NumPy or MMEngine.

Nothing else in the package reads an underscored attribute of another
library. Each entry says which versions it was checked against and what
happens where the private part is missing or has moved: a fallback that is
correct (maybe slower), or an error that says what mmdyn supports.

:func:`install_mmengine_integration` is the one place where importing mmdyn
changes MMEngine's behaviour (weights-only checkpoint loading, see
``docs/checkpoints.md``). It runs when mmdyn is imported, also through a
config's ``custom_imports`` in MMDetection's own ``tools/train.py``, and
does its work once however often it is called.
"""
import functools
import pickle
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

#: versions the accesses below were checked against
CHECKED_VERSIONS = dict(torch='2.6 to 2.13', numpy='1.26 and 2.0 to 2.4',
                        mmengine='0.10.4 to 0.10.7')

# ------------------------------------------------------------------ torch

#: the base of BatchNorm1d/2d/3d and SyncBatchNorm (private to torch, and
#: what MMCV and MMDetection test against too; checked: torch 2.6-2.13)
from torch.nn.modules.batchnorm import _BatchNorm as BatchNormBase  # noqa


#: ``nn.Module`` attributes holding a module's own hooks (torch >= 2.0)
_MODULE_HOOK_DICTS = ('_forward_hooks', '_forward_pre_hooks',
                      '_backward_hooks', '_backward_pre_hooks')
#: ``torch.nn.modules.module`` globals holding hooks on every module
_GLOBAL_HOOK_DICTS = ('_global_forward_hooks', '_global_forward_pre_hooks',
                      '_global_backward_hooks', '_global_backward_pre_hooks')


def _global_hook_dicts() -> List[dict]:
    from torch.nn.modules import module
    found = [getattr(module, name, None) for name in _GLOBAL_HOOK_DICTS]
    if any(d is None for d in found[:2]):
        raise RuntimeError(
            'mmdyn: this PyTorch keeps global module hooks elsewhere than '
            f'torch.nn.modules.module{_GLOBAL_HOOK_DICTS[:2]}; mmdyn was '
            f"checked against torch {CHECKED_VERSIONS['torch']}")
    return [d for d in found if d is not None]


def module_hook_dicts(module: nn.Module) -> List[dict]:
    """The dicts a module's forward and backward hooks are registered in:
    a hook is there while it is registered, so looking at them is how to
    tell, cheaply, whether a module has hooks (checked: torch 2.6-2.13)."""
    try:
        return [getattr(module, name) for name in _MODULE_HOOK_DICTS]
    except AttributeError as error:
        raise RuntimeError(
            f'mmdyn: nn.Module has no {error.name}; mmdyn was checked '
            f"against torch {CHECKED_VERSIONS['torch']}") from None


def global_hooks() -> bool:
    """Whether forward or backward hooks are registered for every module
    (``register_module_forward_hook`` and its kind, which e.g.
    ``torch.profiler`` with ``with_modules=True`` uses)."""
    return any(_global_hook_dicts())


def has_hooks(modules: Sequence[nn.Module]) -> bool:
    """Whether any of ``modules`` (with their submodules) has forward or
    backward hooks, or every module has (global hooks). A fused op or a
    CUDA graph that stands in for a module's forward would skip them."""
    return global_hooks() or any(
        any(module_hook_dicts(m)) for module in modules
        for m in module.modules())


def foreach_copy_(targets: List[Tensor], sources: List[Tensor]) -> None:
    """``target.copy_(source)`` for every pair, in a few kernels where
    PyTorch has ``torch._foreach_copy_`` (2.1+), else one copy each."""
    copy = getattr(torch, '_foreach_copy_', None)
    if copy is None:
        for target, source in zip(targets, sources):
            target.copy_(source)
    else:
        copy(targets, sources)


def version_counter(tensor: Tensor) -> Optional[int]:
    """How many times ``tensor``'s data was changed in place (its
    ``_version``, which every in-place operation increments; checked:
    torch 2.6-2.13), or None where PyTorch has no such counter: then
    nothing kept for a tensor's values may be taken as current."""
    return getattr(tensor, '_version', None)


# ------------------------------------------------------------------ numpy


def numpy_pickle_globals() -> list:
    """What pickled numpy arrays and scalars need to load weights-only:
    ``numpy.core.multiarray._reconstruct`` and ``scalar``, which numpy 2
    moved to ``numpy._core``."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return [_reconstruct, scalar]


# --------------------------------------------------------------- mmengine

_INSTALLED = False
#: statistics every HistoryBuffer has (``__setstate__`` registers them)
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_state(self) -> dict:
    """``HistoryBuffer.__getstate__`` without its four default statistics
    methods, which MMEngine's own pickles as ``statistics_methods``
    (checked: mmengine 0.10.4-0.10.7): pickled, they are ``getattr`` calls
    that no weights-only loader may allow, and ``__setstate__`` registers
    them again anyway. Custom methods are kept."""
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    custom = {name: method
              for name, method in self._statistics_methods.items()
              if name not in _DEFAULT_STATISTICS}
    if custom:
        state['statistics_methods'] = custom
    return state


def _checkpoint_schemes() -> Dict[str, Callable]:
    """MMEngine's registered checkpoint loaders by prefix
    (``CheckpointLoader._schemes``, checked: mmengine 0.10.4-0.10.7)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    schemes = getattr(CheckpointLoader, '_schemes', None)
    if not isinstance(schemes, dict):
        raise RuntimeError(
            'mmdyn: MMEngine keeps its checkpoint loaders elsewhere than '
            'CheckpointLoader._schemes; mmdyn was checked against mmengine '
            f"{CHECKED_VERSIONS['mmengine']}")
    return schemes


def _weights_only_download(loader: Callable) -> Callable:
    """``loader`` (one of MMEngine's URL schemes) with MMEngine's training
    checkpoint types allowed to the weights-only ``torch.load`` it ends in,
    and its refusals turned into mmdyn's ``CheckpointError``."""
    from .checkpoint.io import (TRAINING_CHECKPOINT_GLOBALS, CheckpointError,
                                refusal_message, refused_type)

    @functools.wraps(loader)
    def load(filename, *args, **kwargs):
        try:
            with torch.serialization.safe_globals(
                    TRAINING_CHECKPOINT_GLOBALS):
                return loader(filename, *args, **kwargs)
        except pickle.UnpicklingError as error:
            type_name = refused_type(error)
            if type_name is None:
                raise
            raise CheckpointError(refusal_message(filename,
                                                  type_name)) from None

    load.mmdyn_weights_only = True
    return load


def _checked_runner_load(load_checkpoint: Callable) -> Callable:
    """MMEngine's ``Runner.load_checkpoint`` (``load_from``, ``--resume``,
    ``tools/test.py``) that first checks the checkpoint against the model
    (:func:`mmdyn.checkpoint.strict.check_detector_checkpoint`), between
    reading the file and loading it: through the Runner module's
    ``_load_checkpoint_to_model`` (checked: mmengine 0.10.4-0.10.7)."""
    from mmengine.runner import runner as runner_module

    from .checkpoint.strict import (PARTIAL_LOAD_KEY,
                                    check_detector_checkpoint)
    if not callable(getattr(runner_module, '_load_checkpoint_to_model',
                            None)):
        raise RuntimeError(
            'mmdyn: MMEngine\'s Runner no longer loads checkpoints through '
            '_load_checkpoint_to_model; mmdyn was checked against mmengine '
            f"{CHECKED_VERSIONS['mmengine']}")

    @functools.wraps(load_checkpoint)
    def load(self, filename, map_location='cpu', strict=False,
             revise_keys=[(r'^module.', '')]):
        to_model = runner_module._load_checkpoint_to_model
        partial = bool(getattr(self, 'cfg', {}).get(PARTIAL_LOAD_KEY, False))

        def checked(model, checkpoint, strict=False, logger=None,
                    revise_keys=[(r'^module.', '')]):
            check_detector_checkpoint(model, checkpoint, str(filename),
                                      revise_keys, partial, self.logger)
            return to_model(model, checkpoint, strict, logger, revise_keys)

        runner_module._load_checkpoint_to_model = checked
        try:
            return load_checkpoint(self, filename, map_location, strict,
                                   revise_keys)
        finally:
            runner_module._load_checkpoint_to_model = to_model

    load.mmdyn_checked = True
    return load


def _register_flop_handles() -> None:
    """Add mmdyn's handles for the dynamic convs' element-wise products and
    poolings (:data:`mmdyn.analysis.complexity.DYNAMIC_CONV_FLOP_HANDLES`)
    to the handles every MMEngine ``FlopAnalyzer`` starts from, the
    module-level ``_DEFAULT_SUPPORTED_FLOP_OPS`` (checked: mmengine
    0.10.4-0.10.7), so that ``mmengine.analysis.get_model_complexity_info``
    and MMDetection's ``tools/analysis_tools/get_flops.py`` count what
    mmdyn's complexity tool counts."""
    from mmengine.analysis import complexity_analysis

    from .analysis.complexity import DYNAMIC_CONV_FLOP_HANDLES
    table = getattr(complexity_analysis, '_DEFAULT_SUPPORTED_FLOP_OPS', None)
    if not isinstance(table, dict):
        warnings.warn(
            'mmdyn: MMEngine\'s FlopAnalyzer has no '
            '_DEFAULT_SUPPORTED_FLOP_OPS (checked: mmengine '
            f"{CHECKED_VERSIONS['mmengine']}); its counts "
            'leave out the attention branches of dynamic convs')
        return
    table.update(DYNAMIC_CONV_FLOP_HANDLES)


def _register_config_package() -> None:
    """Let configs inherit mmdyn's with ``_base_ = 'mmdyn::odconv/...'``:
    MMEngine resolves ``package::`` paths only for the packages of its
    ``MODULE2PACKAGE`` table (checked: mmengine 0.10.4-0.10.7), and finds
    the files in the installed package's ``.mim/configs`` (setup.py puts
    them there). It takes effect once mmdyn is imported, which mmdyn's
    tools and ``mim train mmdyn`` do before they read a config."""
    from mmengine.config import utils as config_utils
    table = getattr(config_utils, 'MODULE2PACKAGE', None)
    if not isinstance(table, dict):
        warnings.warn(
            "mmdyn: MMEngine has no MODULE2PACKAGE table (checked: mmengine "
            f"{CHECKED_VERSIONS['mmengine']}); configs cannot inherit "
            "'mmdyn::' paths, use relative paths to mmdyn's configs")
        return
    table.setdefault('mmdyn', 'mmdyn')


def install_mmengine_integration() -> None:
    """Make every checkpoint MMEngine reads go through weights-only loading
    and, for a Runner's model, a check of every key and shape
    (``docs/checkpoints.md``); idempotent.

    - the loader of local files (``load_from``, ``--resume``,
      ``tools/test.py``) becomes :func:`mmdyn.checkpoint.io.
      load_checkpoint_file`;
    - every other registered scheme (``http(s)://``, ``torchvision://``,
      ``open-mmlab://``, ...) loads weights-only with MMEngine's training
      checkpoint types allowed, and ``load_url`` (``torch.hub``'s, whose
      default is to unpickle in full) loads weights-only;
    - ``HistoryBuffer`` pickles without the methods that weights-only
      loading refuses;
    - ``Runner.load_checkpoint`` checks the checkpoint against the model
      before loading it, unless the config sets ``partial_load=True``
      (:mod:`mmdyn.checkpoint.strict`);
    - the Runner's checkpoints (``CheckpointHook``) are written whole or
      not at all (:func:`mmdyn.checkpoint.io.save_checkpoint`);
    - MMEngine's FLOP counter counts the dynamic convs' attention branches
      as mmdyn's complexity tool does (:func:`_register_flop_handles`);
    - configs can inherit ``mmdyn::`` paths (:func:`_register_config_package`).

    On an MMEngine outside :data:`CHECKED_VERSIONS` it warns and changes
    nothing: checkpoints then load as that MMEngine loads them.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    import mmengine
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner import checkpoint as mmengine_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader
    if not mmengine.__version__.startswith('0.10.'):
        warnings.warn(
            f'mmdyn: mmengine {mmengine.__version__} is not one mmdyn was '
            f"checked against ({CHECKED_VERSIONS['mmengine']}): checkpoints "
            'are loaded as MMEngine loads them, not weights-only by mmdyn')
        _INSTALLED = True
        return
    from .checkpoint.io import load_local_checkpoint, save_runner_checkpoint
    HistoryBuffer.__getstate__ = _history_buffer_state
    mmengine_checkpoint.load_url = functools.partial(
        torch.hub.load_state_dict_from_url, weights_only=True)
    for prefix, loader in list(_checkpoint_schemes().items()):
        if prefix and not getattr(loader, 'mmdyn_weights_only', False):
            CheckpointLoader.register_scheme(
                prefix, _weights_only_download(loader), force=True)
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint,
                                     force=True)
    from mmengine.runner import Runner
    from mmengine.runner import runner as runner_module
    if not getattr(Runner.load_checkpoint, 'mmdyn_checked', False):
        Runner.load_checkpoint = _checked_runner_load(Runner.load_checkpoint)
    # Runner.save_checkpoint writes through its module's save_checkpoint
    # (checked: mmengine 0.10.4-0.10.7)
    if hasattr(runner_module, 'save_checkpoint'):
        runner_module.save_checkpoint = save_runner_checkpoint
    _register_flop_handles()
    _register_config_package()
    _INSTALLED = True
