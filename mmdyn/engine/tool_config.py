"""What tools/train.py and tools/test.py do alike, as MMDetection's tools:
read the config with the command line's overrides, build the runner."""
import argparse
import contextlib
import gc
import os
import os.path as osp
from typing import Iterator, List, Optional

import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdyn.checkpoint.io import TRUSTED_CHECKPOINTS_ENV, trust_checkpoints


class _TrustCheckpoint(argparse.Action):

    def __call__(self, parser, namespace, value, option_string=None):
        try:
            trust_checkpoints([value])
        except ValueError as error:
            parser.error(f'{option_string}: {error}')
        # a new list, as argparse's 'append' makes: the default is shared
        setattr(namespace, self.dest,
                [*getattr(namespace, self.dest), value])


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint FILE`` (repeatable): FILE may be unpickled in
    full if weights-only loading refuses it (see
    :func:`mmdyn.checkpoint.trust_checkpoints`)."""
    parser.add_argument(
        '--trust-checkpoint', action=_TrustCheckpoint, default=[],
        metavar='FILE',
        help='a local checkpoint you trust: if weights-only loading refuses '
        'it, unpickle it in full, which runs any code it holds (repeatable; '
        f'also {TRUSTED_CHECKPOINTS_ENV})')


def parse_runner_args(parser: argparse.ArgumentParser,
                      argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Add the options every runner tool shares (``--cfg-options``,
    ``--launcher``, ``--local-rank``, ``--partial-load``,
    ``--trust-checkpoint``), parse, and export ``LOCAL_RANK`` for launchers
    that pass it as an option."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument(
        '--partial-load', action='store_true',
        help='load a checkpoint that does not fit the model in part, on '
        'purpose (e.g. another number of classes); the log lists what was '
        'left unloaded (config key partial_load)')
    add_trust_argument(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_tool_config(path: str, cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None,
                     launcher: str = 'none',
                     partial_load: bool = False) -> Config:
    """The config at ``path`` with ``--cfg-options`` merged, the launcher
    set, ``partial_load`` set if asked for (:mod:`mmdyn.checkpoint.strict`),
    and ``work_dir`` from the command line, the config, or
    ``./work_dirs/<config name>``, in that order."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if partial_load:
        cfg.partial_load = True
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def build_runner(cfg: Config) -> Runner:
    """MMEngine's Runner, or the config's own ``runner_type``."""
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)


@contextlib.contextmanager
def distributed_shut_down_at_exit() -> Iterator[None]:
    """Destroy the process group a launcher's runner made once the block
    has run. MMEngine leaves it to the interpreter's exit, where gloo's
    worker threads can still hold work whose tensors Python is tearing
    down: ``terminate called without an active exception`` and SIGABRT
    after the results were printed, in about one CPU run of four (NCCL
    warns that resources may leak). After an error it is left to the
    launcher, which stops every rank: tearing it down here could wait on
    ranks that are still in a collective."""
    yield
    if dist.is_available() and dist.is_initialized():
        # every rank's last collective done, and the runner's wrapped model
        # (which holds the group) freed, before the group goes
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()
