"""Helpers shared by the dynamic backbones."""

#: dynamic conv types whose attention branch has a norm layer
_NORMED_TYPES = ('ODConv2d', 'DCDConv2d')


def backbone_conv_cfg(dynamic_conv_cfg: dict, temperature: float,
                      norm_cfg: dict) -> dict:
    """The conv config a backbone gives its dynamic layers: the backbone's
    temperature and, for layers whose attention has a norm, the backbone's
    ``norm_cfg`` (so ``SyncBN`` or frozen norms reach the attention too)
    unless the conv config names its own."""
    cfg = dict(dynamic_conv_cfg, temperature=temperature)
    if cfg['type'] in _NORMED_TYPES:
        cfg.setdefault('norm_cfg', norm_cfg)
    return cfg


def check_stage_indices(name: str, kwargs: dict, num_stages: int) -> None:
    """Clear errors for ``out_indices`` and ``frozen_stages`` that name a
    stage the backbone does not have."""
    out_indices = kwargs.get('out_indices', ())
    if not all(isinstance(i, int) and 0 <= i < num_stages
               for i in out_indices):
        raise ValueError(f'{name}: out_indices must be stage indices in '
                         f'0..{num_stages - 1}, got {out_indices!r}')
    frozen = kwargs.get('frozen_stages', -1)
    if not isinstance(frozen, int) or not -1 <= frozen <= num_stages:
        raise ValueError(f'{name}: frozen_stages must be -1 (none) or '
                         f'0..{num_stages} (stem and that many stages), got '
                         f'{frozen!r}')
