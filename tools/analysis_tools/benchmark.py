"""Time detectors (a training step through MMEngine's ``train_step`` with
the config's optimizer wrapper, and an inference) or backbones (inference
throughput), each built from a config, in turns in one run.

    python tools/analysis_tools/benchmark.py detector \
        --model configs/baseline/faster-rcnn_r50_fpn_1x_coco.py \
        --model configs/odconv/faster-rcnn_r50-odconv-1x_fpn_1x_coco.py \
            model.backbone.cuda_graph=True \
        [--amp] [--warmup 5] [--reps 20] [--out FILE.json]

Each ``--model`` is a config and its overrides (as ``--cfg-options`` takes
them); the first is the reference of the ratios. See
:mod:`mmdyn.analysis.benchmark` and ``docs/speed.md``.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

from mmdyn.analysis.benchmark import main

if __name__ == '__main__':
    main()
