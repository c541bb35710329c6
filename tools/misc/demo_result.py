"""Train and test the README's demo, and record what it printed and how
long it took, with a fingerprint of the code it ran.

    python3 tools/misc/demo_result.py [--out docs/demo_result.json]

The README quotes ``docs/demo_result.json``; a test checks that the two
agree and that the code the demo runs (mmdyn, the demo configs, the tools)
has not changed since the file was written. Run this after such a change,
on an otherwise idle machine (about 7 minutes on 2 CPU cores), and copy the
printed lines into the README.
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
CONFIG = 'configs/demo/mask-rcnn_r18-odconv-4x_fpn_demo-shapes.py'
#: what the demo's numbers depend on in this repository
CODE = ('mmdyn', 'configs/demo', 'tools/train.py', 'tools/test.py')
#: the metrics the README quotes, in its order
METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'segm_mAP',
           'segm_mAP_50', 'segm_mAP_75')


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
    parser.add_argument('--out', default=osp.join(REPO, 'docs',
                                                  'demo_result.json'))
    parser.add_argument('--keep-checkpoint', metavar='FILE',
                        help='copy the trained checkpoint to FILE (a new '
                        'file), e.g. for tools/deployment/pytorch2onnx.py')
    args = parser.parse_args(argv)
    if args.keep_checkpoint and osp.exists(args.keep_checkpoint):
        parser.error(f'--keep-checkpoint {args.keep_checkpoint} exists: name '
                     'a new file')
    with tempfile.TemporaryDirectory() as folder:
        work = osp.join(folder, 'work')
        start = time.perf_counter()
        run(osp.join(REPO, 'tools', 'train.py'), osp.join(REPO, CONFIG),
            '--work-dir', work, cwd=folder)
        output = run(osp.join(REPO, 'tools', 'test.py'),
                     osp.join(REPO, CONFIG), osp.join(work, 'iter_300.pth'),
                     '--work-dir', work, cwd=folder)
        seconds = time.perf_counter() - start
        size = osp.getsize(osp.join(work, 'iter_300.pth'))
        if args.keep_checkpoint:
            shutil.copyfile(osp.join(work, 'iter_300.pth'),
                            args.keep_checkpoint)
    metrics = {}
    for name in METRICS:
        found = re.findall(rf'coco/{name}: ([0-9.]+)', output)
        if not found:
            raise SystemExit(f'tools/test.py printed no coco/{name}')
        metrics[name] = float(found[-1])
    import mmcv
    import mmdet
    import mmengine
    import torch
    result = dict(
        config=CONFIG, metrics=metrics, seconds=round(seconds),
        checkpoint_mb=round(size / 1e6), cpu=cpu_name(),
        cores=os.cpu_count(), date=time.strftime('%Y-%m-%d'),
        versions=dict(torch=torch.__version__, mmcv=mmcv.__version__,
                      mmdet=mmdet.__version__,
                      mmengine=mmengine.__version__),
        code=code_fingerprint())
    with open(args.out, 'w') as f:
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
    """The demo's output as the README quotes it."""
    m = result['metrics']
    return (f"coco/bbox_mAP: {m['bbox_mAP']:.4f}  coco/bbox_mAP_50: "
            f"{m['bbox_mAP_50']:.4f}  coco/bbox_mAP_75: "
            f"{m['bbox_mAP_75']:.4f} ...\n"
            f"coco/segm_mAP: {m['segm_mAP']:.4f}  coco/segm_mAP_50: "
            f"{m['segm_mAP_50']:.4f}  coco/segm_mAP_75: "
            f"{m['segm_mAP_75']:.4f} ...")


if __name__ == '__main__':
    main()
