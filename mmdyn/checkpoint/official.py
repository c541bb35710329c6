"""The authors' released ImageNet checkpoints, where mmdyn's configs expect
them, and what to tell a user whose pretrained file is missing."""
import os.path as osp
from typing import Optional

_ODCONV = 'OSVAI/ODConv README'
_DCD = 'liyunsheng13/dcd README'
_DRIVE = 'https://drive.google.com/file/d/{}/view'

#: file name under ``checkpoints/<method>/`` -> (model, where it is listed,
#: download link). ODConv's files are renamed to these names; DCD's keep the
#: names its README uses.
OFFICIAL_CHECKPOINTS = {
    'od_resnet18_1x.pth.tar':
    ('ResNet18 + ODConv (1x)', _ODCONV, '1AxCKAHJve3fbe2SnvoHsSucNvjv5Dxow'),
    'od_resnet18_4x.pth.tar':
    ('ResNet18 + ODConv (4x)', _ODCONV, '1Krsaa0fBKluFCyO7nmg-R9LlsoSUjJj2'),
    'od_resnet50_1x.pth.tar':
    ('ResNet50 + ODConv (1x)', _ODCONV, '1Aqwv6uQ9iI8a8Z5vjqmKuSTar0U8gfVJ'),
    'od_resnet50_4x.pth.tar':
    ('ResNet50 + ODConv (4x)', _ODCONV, '1uO774twnIYLiDV2BAsVM136k4EAhs6oh'),
    'od_resnet101_1x.pth.tar':
    ('ResNet101 + ODConv (1x)', _ODCONV, '1PJNcrw2RP9xG-18gw2NE93mwVmQBIbeM'),
    'od_resnet101_2x.pth.tar':
    ('ResNet101 + ODConv (2x)', _ODCONV, '1ph0woQfR2Ut2JfV4RKQPB6tAXf9pZmTo'),
    'od_mobilenetv2_100_1x.pth.tar':
    ('MobileNetV2 (1.0x) + ODConv (1x)', _ODCONV,
     '1Du_AH_pvtFE8ABg_FLjtPccVypw5AajU'),
    'od_mobilenetv2_100_4x.pth.tar':
    ('MobileNetV2 (1.0x) + ODConv (4x)', _ODCONV,
     '1HfwoBWOGsiiuhoOyetoQeJ8iXrCi5lJv'),
    'od_mobilenetv2_075_1x.pth.tar':
    ('MobileNetV2 (0.75x) + ODConv (1x)', _ODCONV,
     '1g3_OppE5jXW5eO7jy2vbw9mfVqNz-_Tk'),
    'od_mobilenetv2_075_4x.pth.tar':
    ('MobileNetV2 (0.75x) + ODConv (4x)', _ODCONV,
     '1bGloR4WUAsGEQpbmqLO-hShIcoV0ut42'),
    'od_mobilenetv2_050_1x.pth.tar':
    ('MobileNetV2 (0.5x) + ODConv (1x)', _ODCONV,
     '137qpjBdLjQ6MNNQ-YbqgWZeTEAq7AM_2'),
    'od_mobilenetv2_050_4x.pth.tar':
    ('MobileNetV2 (0.5x) + ODConv (4x)', _ODCONV,
     '1x2bB8GxNAKfvO-_MX-9Z9mqABBfHkYed'),
    'resnet50_dcd.pth.tar':
    ('ResNet-50 DCD', _DCD, '14VUXecopj3aTu1s4IKdT2FsPt7Iq7BDK'),
    'mv2x1.0_dcd.pth.tar':
    ('MobileNetV2x1.0 DCD (fc_squeeze=16)', _DCD,
     '1Nc8VsUTpm8NwWthwJUD75deJCbE_LHvk'),
}

_METHODS = {'OD': 'ODConv', 'DCD': 'DCD', 'DyConv': 'DyConv',
            'CondConv': 'CondConv'}


def is_missing_local_file(filename: str) -> bool:
    """A local path (not ``scheme://``, which MMEngine fetches) that does
    not exist."""
    return '://' not in filename and not osp.isfile(filename)


def static_checkpoint_for(backbone_type: str, depth: Optional[int] = None,
                          widen_factor: Optional[float] = None
                          ) -> Optional[str]:
    """A static ImageNet checkpoint MMEngine can fetch for the same
    architecture (mmdyn inflates it), or None if there is none."""
    name = backbone_type.split('.')[-1]
    if name.endswith('ResNet') and depth in (18, 34, 50, 101, 152):
        return f'torchvision://resnet{depth}'
    if name.endswith('MobileNetV2') and widen_factor in (None, 1.0):
        return 'open-mmlab://mmdet/mobilenet_v2'
    return None


def missing_pretrained_message(filename: str, backbone_type: str,
                               depth: Optional[int] = None,
                               widen_factor: Optional[float] = None,
                               option: str = 'model.backbone.init_cfg'
                               ) -> str:
    """What a user whose pretrained backbone checkpoint is missing needs to
    know: which file, where it goes, and how to start without it.
    ``option`` is the config key of the backbone's init_cfg."""
    where = osp.abspath(filename)
    lines = [f'{backbone_type}: pretrained checkpoint not found: {filename}']
    known = OFFICIAL_CHECKPOINTS.get(osp.basename(filename))
    if known:
        model, listed, file_id = known
        lines.append(
            f"It is the authors' ImageNet checkpoint '{model}' "
            f'({listed}). Download it from {_DRIVE.format(file_id)} and save '
            f'it as {where} (keep the file as it is; mmdyn maps its keys).')
    else:
        method = next((m for prefix, m in _METHODS.items()
                       if backbone_type.split('.')[-1].startswith(prefix)),
                      None)
        released = ' (none was released for it)' if method in (
            'DyConv', 'CondConv') else ''
        lines.append(f'Put an ImageNet checkpoint of this backbone'
                     f'{released} at {where}, or point '
                     f'{option}.checkpoint at it.')
    static = static_checkpoint_for(backbone_type, depth, widen_factor)
    if static:
        lines.append(
            'Or start from a static ImageNet checkpoint of the same '
            'architecture: its weights become every dynamic kernel and the '
            'network computes the static one until its attentions learn:\n'
            f'    --cfg-options {option}.checkpoint={static}')
    else:
        lines.append('Or start from a static ImageNet checkpoint of the same '
                     'architecture (mmdyn inflates it): set '
                     f'{option}.checkpoint to its path.')
    lines.append(f'Or train without ImageNet weights: --cfg-options '
                 f'{option}=None')
    return '\n'.join(lines)


def check_pretrained_files(cfg) -> None:
    """Fail at once, before any data is read, if the detector's backbone
    names a local ``Pretrained`` checkpoint that does not exist."""
    backbone = cfg.get('model', {}).get('backbone')
    if not backbone:
        return
    init_cfgs = backbone.get('init_cfg') or []
    if isinstance(init_cfgs, dict):
        init_cfgs = [init_cfgs]
    for init_cfg in init_cfgs:
        filename = init_cfg.get('checkpoint')
        if (init_cfg.get('type') == 'Pretrained' and filename
                and is_missing_local_file(filename)):
            raise FileNotFoundError(
                missing_pretrained_message(
                    filename, backbone.get('type', 'backbone'),
                    backbone.get('depth'), backbone.get('widen_factor')))
