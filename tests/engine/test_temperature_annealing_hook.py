"""TemperatureAnnealingHook: the papers' linear 30 -> 1 schedule."""
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from mmdet.registry import HOOKS

import mmdyn  # noqa: F401
from mmdyn import ODConv2d, TemperatureAnnealingHook


def runner_at(iteration, model, iters_per_epoch=5):
    return SimpleNamespace(iter=iteration, model=model,
                           train_dataloader=[None] * iters_per_epoch,
                           logger=mock.Mock())


def test_linear_schedule_by_epoch_then_held():
    model = torch.nn.Sequential(ODConv2d(8, 8, 3), ODConv2d(8, 8, 1))
    hook = HOOKS.build(dict(type='TemperatureAnnealingHook', start=30.0,
                            end=1.0, length=2, by_epoch=True))
    hook.before_train(runner_at(0, model))
    assert hook.total_iters == 10
    seen = []
    for it in range(14):
        hook.before_train_iter(runner_at(it, model), it)
        seen.append(model[0].temperature)
        assert model[1].temperature == model[0].temperature
    assert seen[0] == 30.0
    assert seen[5] == pytest.approx(15.5)
    assert seen[10:] == [1.0] * 4
    assert all(a > b for a, b in zip(seen[:10], seen[1:11]))


def test_resume_continues_the_schedule():
    model = torch.nn.Sequential(ODConv2d(8, 8, 3))
    hook = TemperatureAnnealingHook(start=10.0, end=2.0, length=8,
                                    by_epoch=False)
    hook.before_train(runner_at(4, model))  # resumed at iteration 4
    assert model[0].temperature == pytest.approx(6.0)


def test_model_without_dynamic_convs_warns():
    runner = runner_at(0, torch.nn.Conv2d(3, 3, 1))
    TemperatureAnnealingHook().before_train(runner)
    runner.logger.warning.assert_called_once()


@pytest.mark.parametrize('kwargs,message', [
    (dict(start=0), 'start'), (dict(end=-1), 'end'),
    (dict(length=0), 'length')])
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemperatureAnnealingHook(**kwargs)
