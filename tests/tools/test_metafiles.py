"""The model zoo metadata (model-index.yml, configs/*/metafile.yml): every
COCO config listed once, every listed config there, and the numbers those
of mmdyn's complexity tool."""
import os.path as osp
import sys

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import complexity_table  # noqa: E402
import metafiles  # noqa: E402


def _models():
    with open(osp.join(REPO, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    models = []
    for path in index['Import']:
        assert osp.isfile(osp.join(REPO, path)), path
        with open(osp.join(REPO, path)) as f:
            data = yaml.safe_load(f)
        collections = {c['Name'] for c in data.get('Collections', [])}
        for model in data['Models']:
            if 'In Collection' in model:
                assert model['In Collection'] in collections
            models.append(model)
    return models


def test_every_config_listed_once_and_every_listed_config_there():
    listed = [m['Config'] for m in _models()]
    assert sorted(listed) == metafiles.configs()
    assert len(listed) == len(set(listed)) == 48
    for model in _models():
        assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
        for key in ('Parameters', 'FLOPs', 'Architecture'):
            assert model['Metadata'][key]


def test_paper_results_are_marked_as_the_papers():
    with_results = [m for m in _models() if 'Results' in m]
    assert len(with_results) == 24  # the Table 4 rows
    for model in with_results:
        assert "the paper's number" in model['Results'][0]['Note']


@pytest.mark.slow
@pytest.mark.parametrize('config', metafiles.configs())
def test_numbers_are_the_complexity_tools(config):
    """One config a test, so that the workers of ``pytest -n`` share them
    (each counts a detector's MAdds at 1280x800)."""
    metadata = {m['Config']: m for m in _models()}[config]['Metadata']
    row = complexity_table.measure(osp.join(REPO, config), (1280, 800))
    assert metadata['Parameters'] == int(round(row['params_m'] * 1e6))
    assert metadata['FLOPs'] == int(round(row['madds_g'] * 1e9))
