"""MMEngine's own training checkpoints load weights-only (resume, load_from,
tools/test.py); tests/test_safe_loading.py checks that nothing beyond their
types is accepted."""
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import mmdyn  # noqa: F401  (installs the weights-only loader)
from mmdyn.checkpoint.io import safe_torch_load


class _Model(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, mode='loss'):
        return {'loss': self.linear(x).pow(2).mean()}


class _Data(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(x=torch.full((2, ), float(index)))


def _runner(work_dir, max_epochs, resume=False):
    return Runner(
        model=_Model(), work_dir=str(work_dir),
        experiment_name=f'exp{max_epochs}{resume}',
        train_dataloader=dict(dataset=_Data(), batch_size=2,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01,
                                          momentum=0.9)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1,
                              by_epoch=False, begin=0, end=2)],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1)),
        # as MMDetection configs do (the scope outlives the runner)
        default_scope='mmdet', resume=resume, randomness=dict(seed=0))


def test_training_checkpoint_loads_weights_only_and_resumes(tmp_path):
    _runner(tmp_path, 2).train()
    path = str(tmp_path / 'epoch_2.pth')
    checkpoint = safe_torch_load(path)
    assert {'state_dict', 'optimizer', 'message_hub', 'meta'} <= set(
        checkpoint)
    # the message hub's buffers come back with their statistics
    buffers = checkpoint['message_hub']['log_scalars']
    assert buffers['train/loss'].mean() >= 0
    runner = _runner(tmp_path, 3, resume=True)
    runner.train()
    assert runner.epoch == 3
