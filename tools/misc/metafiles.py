"""Write the model zoo metadata that MIM and MMDetection's docs read:
``model-index.yml``, and per method ``configs/<method>/metafile.yml`` and
the ``README.md`` with its table,
every COCO config listed with its architecture, parameters and MAdds (from
mmdyn's complexity tool, 1280x800) and, for the ODConv paper's Table 4 rows,
the paper's box AP (marked as the paper's: mmdyn has not run COCO).

    python tools/misc/metafiles.py [--complexity FILE.json]

``--complexity`` reuses the JSON of ``tools/analysis_tools/
complexity_table.py --out`` instead of measuring again.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import os.path as osp  # noqa: E402
import sys  # noqa: E402

import yaml  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

COLLECTIONS = {
    'baseline': dict(
        name='Static', architecture=[],
        paper=None),
    'odconv': dict(
        name='ODConv', architecture=['ODConv'],
        paper=dict(URL='https://arxiv.org/abs/2209.07947',
                   Title='Omni-Dimensional Dynamic Convolution'),
        weights='https://github.com/OSVAI/ODConv'),
    'dcd': dict(
        name='DCD', architecture=['DCD'],
        paper=dict(URL='https://arxiv.org/abs/2103.08756',
                   Title='Revisiting Dynamic Convolution via Matrix '
                   'Decomposition'),
        weights='https://github.com/liyunsheng13/dcd'),
    'dyconv': dict(
        name='DyConv', architecture=['DyConv'],
        paper=dict(URL='https://arxiv.org/abs/1912.03458',
                   Title='Dynamic Convolution: Attention over Convolution '
                   'Kernels')),
    'condconv': dict(
        name='CondConv', architecture=['CondConv'],
        paper=dict(URL='https://arxiv.org/abs/1904.04971',
                   Title='CondConv: Conditionally Parameterized '
                   'Convolutions for Efficient Inference')),
}

#: box AP of the ODConv paper's Table 4 (Faster R-CNN, Mask R-CNN)
PAPER_BOX_AP = {
    'r50': (37.2, 38.0), 'r50-condconv-8x': (38.1, 38.8),
    'r50-dyconv-4x': (38.3, 39.2), 'r50-dcd': (38.1, 38.8),
    'r50-odconv-1x': (39.0, 39.9), 'r50-odconv-4x': (39.2, 40.1),
    'mobilenetv2': (31.3, 32.2), 'mobilenetv2-condconv-8x': (33.7, 34.4),
    'mobilenetv2-dyconv-4x': (34.5, 35.2), 'mobilenetv2-dcd': (33.3, 34.3),
    'mobilenetv2-odconv-1x': (34.3, 35.0),
    'mobilenetv2-odconv-4x': (35.1, 35.8),
}

DETECTORS = {
    'faster-rcnn': ('Object Detection', ['Faster R-CNN', 'RPN', 'FPN']),
    'mask-rcnn': ('Instance Segmentation', ['Mask R-CNN', 'RPN', 'FPN']),
    'retinanet': ('Object Detection', ['RetinaNet', 'Focal Loss', 'FPN']),
    'fcos': ('Object Detection', ['FCOS', 'FPN', 'Group Normalization']),
}


def configs():
    """Every COCO config, relative to the repository."""
    return sorted(
        osp.relpath(p, REPO)
        for p in glob.glob(osp.join(REPO, 'configs', '*', '*_1x_coco.py')))


def config_path(name: str) -> str:
    """``configs/<method>/<file>`` for the complexity tool's config names
    (relative to configs/, or absolute)."""
    if osp.isabs(name):
        return osp.relpath(name, REPO)
    return name if name.startswith('configs/') else osp.join('configs', name)


def measure_all(paths):
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    import complexity_table
    return {path: complexity_table.measure(osp.join(REPO, path),
                                           (1280, 800))
            for path in paths}


def model_entry(path: str, row: dict) -> dict:
    method = path.split('/')[1]
    name = osp.splitext(osp.basename(path))[0]
    detector, arch = name.split('_')[:2]
    task, architecture = DETECTORS[detector]
    backbone = 'MobileNetV2' if arch.startswith('mobilenetv2') else \
        'ResNet'
    entry = dict(
        Name=name,
        Config=path,
        Metadata=dict(
            **{'Training Data': 'COCO', 'Epochs': 12},
            Parameters=int(round(row['params_m'] * 1e6)),
            FLOPs=int(round(row['madds_g'] * 1e9)),
            Architecture=COLLECTIONS[method]['architecture'] + [backbone] +
            architecture))
    if method != 'baseline':
        entry['In Collection'] = COLLECTIONS[method]['name']
    ap = PAPER_BOX_AP.get(arch) if detector in ('faster-rcnn',
                                                'mask-rcnn') else None
    if ap is not None:
        entry['Results'] = [dict(
            Task=task, Dataset='COCO',
            Metrics={'box AP': ap[detector == 'mask-rcnn']},
            Note="the paper's number (ODConv, Table 4), not a run of this "
            'config')]
    weights = COLLECTIONS[method].get('weights')
    if weights:
        entry['Converted From'] = dict(
            Weights=weights, Code=weights,
            Note="ImageNet backbone weights; tools/model_converters/"
            'official_to_mmdyn.py converts them')
    return entry


def readme(method: str, models: list) -> str:
    info = COLLECTIONS[method]
    title = info['name'] if method != 'baseline' else \
        'Static backbones (the baselines)'
    lines = [f'# {title}', '']
    if info['paper']:
        lines += [f"> [{info['paper']['Title']}]({info['paper']['URL']})",
                  '']
    lines += [
        'COCO 2017 configs: MMDetection\'s 1x configs with only the backbone '
        'changed (see the', 'repository\'s README.md). Params and MAdds by '
        '`tools/analysis_tools/complexity_table.py`', '(1280x800; two-stage '
        'detectors on 1000 proposals). Box AP: the ODConv paper\'s Table 4,',
        'not a run of these configs; blank where the paper has no row.', '',
        '| config | params | MAdds | box AP (paper) |', '|---|---|---|---|']
    for model in models:
        meta = model['Metadata']
        ap = model['Results'][0]['Metrics']['box AP'] if 'Results' in \
            model else ''
        lines.append(f"| [{model['Name']}]({osp.basename(model['Config'])}) "
                     f"| {meta['Parameters'] / 1e6:.2f}M "
                     f"| {meta['FLOPs'] / 1e9:.2f}G | {ap} |")
    return '\n'.join(lines) + '\n'


def write(complexity: dict) -> list:
    written = []
    by_method = {}
    for path in configs():
        by_method.setdefault(path.split('/')[1], []).append(path)
    for method, paths in sorted(by_method.items()):
        info = COLLECTIONS[method]
        data = {}
        if method != 'baseline':
            collection = dict(
                Name=info['name'],
                Metadata={'Training Data': 'COCO',
                          'Architecture': info['architecture']},
                Paper=info['paper'], README=f'configs/{method}/README.md')
            data['Collections'] = [collection]
        data['Models'] = [model_entry(p, complexity[p]) for p in paths]
        out = osp.join(REPO, 'configs', method, 'metafile.yml')
        with open(out, 'w') as f:
            yaml.safe_dump(data, f, sort_keys=False, width=78)
        written.append(osp.relpath(out, REPO))
        with open(osp.join(REPO, 'configs', method, 'README.md'), 'w') as f:
            f.write(readme(method, data['Models']))
    with open(osp.join(REPO, 'model-index.yml'), 'w') as f:
        yaml.safe_dump(dict(Import=written), f, sort_keys=False)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--complexity', help='JSON of complexity_table.py')
    args = parser.parse_args(argv)
    paths = configs()
    if args.complexity:
        with open(args.complexity) as f:
            rows = {config_path(r['config']): r
                    for r in json.load(f)['rows']}
        missing = [p for p in paths if p not in rows]
        if missing:
            raise SystemExit(f'--complexity {args.complexity} lacks '
                             f'{len(missing)} configs, e.g. {missing[0]}')
    else:
        rows = measure_all(paths)
    for path in write(rows):
        print('wrote', path)
    print('wrote model-index.yml')


if __name__ == '__main__':
    main()
