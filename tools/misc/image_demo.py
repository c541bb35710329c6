"""Draw a detector's boxes (and masks) on an image with MMDetection's
``DetInferencer`` and save the picture.

    python tools/misc/image_demo.py IMAGE CONFIG CHECKPOINT --out FILE.png
        [--score-thr 0.3] [--device cpu] [--overwrite]

Any mmdyn config with a checkpoint trained from it, e.g. the demo of
README.md. The checkpoint is read weights-only, as everywhere in mmdyn.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse  # noqa: E402
import os  # noqa: E402
import os.path as osp  # noqa: E402

import mmdyn  # noqa: E402,F401  (layers, backbones, weights-only loading)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Draw a detector's predictions on an image")
    parser.add_argument('image', help='the image file')
    parser.add_argument('config', help='the detector\'s config')
    parser.add_argument('checkpoint', help='its trained checkpoint')
    parser.add_argument('--out', required=True,
                        help='the picture to write (.png or .jpg)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw predictions scoring at least this')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace --out if it exists')
    args = parser.parse_args(argv)
    for name in ('image', 'config', 'checkpoint'):
        if not osp.isfile(getattr(args, name)):
            parser.error(f'{name} {getattr(args, name)}: no such file')
    if not args.out.lower().endswith(('.png', '.jpg', '.jpeg')):
        parser.error(f'--out must name a .png or .jpg file, got {args.out}')
    if osp.exists(args.out) and not args.overwrite:
        parser.error(f'--out {args.out} exists: name a new file, or pass '
                     '--overwrite to replace it')
    return args


def main(argv=None):
    args = parse_args(argv)
    import mmcv
    from mmdet.apis import DetInferencer

    inferencer = DetInferencer(model=args.config, weights=args.checkpoint,
                               device=args.device, scope='mmdet',
                               show_progress=False)
    result = inferencer(args.image, return_vis=True, no_save_vis=True,
                        pred_score_thr=args.score_thr)
    picture = result['visualization'][0]  # RGB
    folder = osp.dirname(osp.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    mmcv.imwrite(mmcv.rgb2bgr(picture), args.out)
    predictions = result['predictions'][0]
    kept = sum(score >= args.score_thr for score in predictions['scores'])
    print(f'{kept} predictions scoring at least {args.score_thr} drawn on '
          f'{args.image}: {args.out}')


if __name__ == '__main__':
    main()
