"""The README's demo figures are those of the code as it is: they come from
docs/demo_result*.json, which tools/misc/demo_result.py writes with a
fingerprint of the code the demos run."""
import importlib.util
import json
import os.path as osp

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location(
    'demo_result', osp.join(REPO, 'tools', 'misc', 'demo_result.py'))
demo_result = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_result)


DEMOS = sorted(demo_result.DEMOS)


def _recorded(demo):
    with open(demo_result.result_file(demo)) as f:
        return json.load(f)


@pytest.mark.parametrize('demo', DEMOS)
def test_the_recorded_demo_ran_the_code_as_it_is(demo):
    result = _recorded(demo)
    assert result['config'] == demo_result.DEMOS[demo][0]
    assert result['code'] == demo_result.code_fingerprint(), (
        f'the demo\'s code changed since {demo_result.result_file(demo)} '
        f'was written: run python3 tools/misc/demo_result.py --demo {demo} '
        'on an idle machine and update the README with what it prints')


@pytest.mark.parametrize('demo', DEMOS)
def test_the_readme_quotes_the_recorded_demo(demo):
    result = _recorded(demo)
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    assert demo_result.readme_lines(result) in readme
    assert demo_result.readme_timing(result) in readme
    if demo == 'mask-rcnn':
        assert f"{result['checkpoint_mb']} MB" in readme


def test_the_fingerprint_follows_the_code(tmp_path):
    import shutil
    for part in ('mmdyn', 'configs/demo', 'configs/_base_', 'tools'):
        shutil.copytree(osp.join(REPO, part), tmp_path / part)
    before = demo_result.code_fingerprint(str(tmp_path))
    assert before == demo_result.code_fingerprint()
    layer = tmp_path / 'mmdyn' / 'layers' / 'odconv.py'
    layer.write_text(layer.read_text() + '\n# changed\n')
    assert demo_result.code_fingerprint(str(tmp_path)) != before


@pytest.mark.parametrize('demo', DEMOS)
def test_a_cpu_user_sees_the_demo_log_within_a_minute(demo):
    """The demo logs every few iterations, training and test: at the
    recorded pace even a machine five times slower logs within a
    minute."""
    from mmengine.config import Config
    result = _recorded(demo)
    cfg = Config.fromfile(osp.join(REPO, result['config']))
    interval = cfg.default_hooks.logger.interval
    seconds_per_iteration = result['seconds'] / cfg.train_cfg.max_iters
    assert interval * seconds_per_iteration * 5 < 60
