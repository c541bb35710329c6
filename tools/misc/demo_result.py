"""Train and test one of the README's demos, and record what it printed
and how long it took, with a fingerprint of the code it ran.

    python3 tools/misc/demo_result.py [--demo {mask-rcnn,retinanet}]
        [--out FILE.json] [--keep-checkpoint FILE]

The README quotes ``docs/demo_result.json`` (Mask R-CNN) and
``docs/demo_result_retinanet.json`` (RetinaNet); a test checks that they
agree and that the code the demos run (mmdyn, the demo configs, the tools)
has not changed since the files were written. Run this for each demo after
such a change, on an otherwise idle machine (5 to 9 minutes each on 2 CPU
cores), and copy the printed lines into the README.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse
import hashlib
import json
import os
import os.path as osp
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: the demos: name -> (config, the kinds of mAP its test prints)
DEMOS = {
    'mask-rcnn': ('configs/demo/mask-rcnn_r18-odconv-4x_fpn_demo-shapes.py',
                  ('bbox', 'segm')),
    'retinanet': ('configs/demo/retinanet_r18-odconv-4x_fpn_demo-shapes.py',
                  ('bbox', )),
}
#: what the demos' numbers depend on in this repository
CODE = ('mmdyn', 'configs/demo', 'configs/_base_', 'tools/train.py',
        'tools/test.py')
#: the metrics the README quotes per kind, in its order
SUFFIXES = ('', '_50', '_75')


def result_file(demo: str) -> str:
    """Where a demo's result is recorded."""
    name = 'demo_result.json' if demo == 'mask-rcnn' else \
        f'demo_result_{demo}.json'
    return osp.join(REPO, 'docs', name)


def code_fingerprint(repo: str = REPO) -> str:
    """SHA-256 over the Python files the demo runs, in a fixed order."""
    digest = hashlib.sha256()
    files = []
    for part in CODE:
        path = osp.join(repo, part)
        if osp.isfile(path):
            files.append(part)
            continue
        for folder, dirs, names in os.walk(path):
            # setup.py's copies of configs and tools for a wheel
            dirs[:] = [d for d in dirs if d != '.mim']
            files += [osp.relpath(osp.join(folder, n), repo) for n in names
                      if n.endswith('.py')]
    for name in sorted(files):
        digest.update(name.encode() + b'\0')
        with open(osp.join(repo, name), 'rb') as f:
            digest.update(f.read() + b'\0')
    return digest.hexdigest()


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def run(*args, cwd):
    result = subprocess.run([sys.executable, *args], cwd=cwd, text=True,
                            capture_output=True)
    if result.returncode:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-2000:])
    return result.stdout + result.stderr


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--demo', choices=sorted(DEMOS), default='mask-rcnn')
    parser.add_argument('--out', help='default: docs/demo_result.json '
                        '(mask-rcnn), docs/demo_result_<demo>.json (others)')
    parser.add_argument('--keep-checkpoint', metavar='FILE',
                        help='copy the trained checkpoint to FILE (a new '
                        'file), e.g. for tools/deployment/pytorch2onnx.py')
    args = parser.parse_args(argv)
    config, kinds = DEMOS[args.demo]
    out = args.out or result_file(args.demo)
    if args.keep_checkpoint and osp.exists(args.keep_checkpoint):
        parser.error(f'--keep-checkpoint {args.keep_checkpoint} exists: name '
                     'a new file')
    with tempfile.TemporaryDirectory() as folder:
        work = osp.join(folder, 'work')
        start = time.perf_counter()
        run(osp.join(REPO, 'tools', 'train.py'), osp.join(REPO, config),
            '--work-dir', work, cwd=folder)
        output = run(osp.join(REPO, 'tools', 'test.py'),
                     osp.join(REPO, config), osp.join(work, 'iter_300.pth'),
                     '--work-dir', work, cwd=folder)
        seconds = time.perf_counter() - start
        size = osp.getsize(osp.join(work, 'iter_300.pth'))
        if args.keep_checkpoint:
            shutil.copyfile(osp.join(work, 'iter_300.pth'),
                            args.keep_checkpoint)
    metrics = {}
    for name in (kind + '_mAP' + suffix for kind in kinds
                 for suffix in SUFFIXES):
        found = re.findall(rf'coco/{name}: ([0-9.]+)', output)
        if not found:
            raise SystemExit(f'tools/test.py printed no coco/{name}')
        metrics[name] = float(found[-1])
    import mmcv
    import mmdet
    import mmengine
    import torch
    result = dict(
        config=config, metrics=metrics, seconds=round(seconds),
        checkpoint_mb=round(size / 1e6), cpu=cpu_name(),
        cores=os.cpu_count(), date=time.strftime('%Y-%m-%d'),
        versions=dict(torch=torch.__version__, mmcv=mmcv.__version__,
                      mmdet=mmdet.__version__,
                      mmengine=mmengine.__version__),
        code=code_fingerprint())
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')
    print(readme_timing(result))
    print(readme_lines(result))


def readme_timing(result: dict) -> str:
    """How long the demo took, as the README says it."""
    minutes, seconds = divmod(result['seconds'], 60)
    return (f"On an idle {result['cores']}-core CPU ({result['cpu']}) the two "
            f'took {minutes} min {seconds} s together')


def readme_lines(result: dict) -> str:
    """The demo's output as the README quotes it: one line per kind of
    mAP (bbox, then segm where the demo has masks)."""
    metrics = result['metrics']
    lines = []
    for kind in ('bbox', 'segm'):
        if f'{kind}_mAP' in metrics:
            lines.append('  '.join(
                f'coco/{kind}_mAP{suffix}: '
                f'{metrics[kind + "_mAP" + suffix]:.4f}'
                for suffix in SUFFIXES) + ' ...')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
