"""A small deterministic COCO-format instance segmentation dataset: circles,
squares and triangles on textured backgrounds, with boxes and polygon masks.

COCO cannot be downloaded everywhere; this lets a new user (and the tests)
train and evaluate a detector in minutes on a CPU.
"""
import json
import math
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, List

import cv2
import numpy as np

from ..fileio import atomic_path

CLASSES = ('circle', 'square', 'triangle')
#: files whose presence marks a complete dataset
ANNOTATION_FILES = ('annotations/instances_train.json',
                    'annotations/instances_val.json')


def _background(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Smooth colour gradient plus low-frequency noise."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    image = base + xs[..., None] * slope[0] + ys[..., None] * slope[1]
    noise = cv2.resize(rng.uniform(-25, 25, (8, 8, 3)).astype(np.float32),
                       (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, radius: float,
             angle: float) -> np.ndarray:
    corners = {'circle': 24, 'square': 4, 'triangle': 3}[shape]
    t = angle + 2 * math.pi * np.arange(corners) / corners
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1)


def _make_image(rng, size, cells):
    image = _background(rng, size)
    cell = size / cells
    objects = []
    slots = rng.permutation(cells * cells)[:rng.randint(2, cells * cells)]
    for slot in slots:
        row, col = divmod(int(slot), cells)
        label = int(rng.randint(len(CLASSES)))
        radius = rng.uniform(0.25, 0.45) * cell
        cx = (col + 0.5) * cell + rng.uniform(-1, 1) * (cell / 2 - radius)
        cy = (row + 0.5) * cell + rng.uniform(-1, 1) * (cell / 2 - radius)
        points = _polygon(CLASSES[label], cx, cy, radius,
                          rng.uniform(0, 2 * math.pi))
        colour = tuple(int(c) for c in rng.randint(0, 256, 3))
        cv2.fillPoly(image, [np.round(points).astype(np.int32)], colour)
        objects.append((label, points))
    return image, objects


def _annotation(ann_id, image_id, label, points, size):
    points = np.clip(points, 0, size - 1)
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    area = float(cv2.contourArea(points.astype(np.float32)))
    return dict(id=ann_id, image_id=image_id, category_id=label + 1,
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=area, iscrowd=0,
                segmentation=[[float(v) for v in points.flatten()]])


def make_demo_shapes(root: str, num_train: int = 200, num_val: int = 50,
                     image_size: int = 256, cells: int = 3,
                     seed: int = 0) -> Dict[str, int]:
    """Write the dataset under ``root``: ``train/``, ``val/`` (PNG images)
    and ``annotations/instances_{train,val}.json``. The same arguments
    always give the same files. Returns the number of images per split."""
    counts = {}
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split, number, split_seed in (('train', num_train, seed),
                                      ('val', num_val, seed + 1)):
        rng = np.random.RandomState(split_seed)
        os.makedirs(osp.join(root, split), exist_ok=True)
        images: List[dict] = []
        annotations: List[dict] = []
        for index in range(number):
            image, objects = _make_image(rng, image_size, cells)
            name = f'{index:05d}.png'
            cv2.imwrite(osp.join(root, split, name), image)
            image_id = index + 1
            images.append(dict(id=image_id, file_name=name,
                               width=image_size, height=image_size))
            for label, points in objects:
                annotations.append(
                    _annotation(len(annotations) + 1, image_id, label,
                                points, image_size))
        path = osp.join(root, 'annotations', f'instances_{split}.json')
        with atomic_path(path) as tmp, open(tmp, 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
        counts[split] = number
    return counts


def demo_shapes_exist(root: str) -> bool:
    return all(osp.isfile(osp.join(root, f)) for f in ANNOTATION_FILES)


def prepare_demo_dataset(cfg) -> bool:
    """Generate the dataset a config names in its ``demo_dataset`` entry
    (keyword arguments of :func:`make_demo_shapes`) if it is not there yet.
    Returns whether anything was generated.

    The files are written to a temporary folder that is then renamed, so
    that several processes (one per GPU) may call this at once, and an
    interrupted run leaves no half-written dataset behind. A folder that
    exists without the dataset's annotations is the user's: it is refused,
    never written into."""
    settings = cfg.get('demo_dataset')
    if not settings:
        return False
    settings = dict(settings)
    root = osp.normpath(settings.pop('root'))
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader') or {}
        data_root = (loader.get('dataset') or {}).get('data_root')
        if data_root is not None and osp.normpath(data_root) != root:
            raise ValueError(
                f'demo_dataset.root={root!r} but {split}_dataloader.dataset'
                f'.data_root={data_root!r}: the dataset would be generated '
                'where it is not read. Change data_root in the config, which '
                'sets both (and the evaluators\' ann_file).')
    if demo_shapes_exist(root):
        return False
    if osp.exists(root) and os.listdir(root):
        raise FileExistsError(
            f'demo_dataset.root={root!r} exists but holds no complete demo '
            f'dataset (missing {", ".join(ANNOTATION_FILES)}); move it away '
            'or set demo_dataset.root to an empty or new folder')
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix='.demo_shapes-', dir=parent)
    try:
        make_demo_shapes(scratch, **settings)
        if osp.isdir(root):  # empty folder
            os.rmdir(root)
        os.rename(scratch, root)
    except OSError:
        if not demo_shapes_exist(root):  # not another process's dataset
            raise
        return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True
