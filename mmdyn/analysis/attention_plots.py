"""PNG figures of an attention summary (:func:`summarize`), readable without
the code: one figure per kind of attention the model has."""
import os.path as osp
from typing import List

_BOX = dict(med='q50', q1='q25', q3='q75', whislo='q05', whishi='q95')


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _short(name: str) -> str:
    for prefix in ('backbone.', 'module.'):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _with(summary, kind):
    return [e for e in summary if kind in e['attentions']]


def _heatmap(plt, entries, kind, key, title, xlabel, xticks, path):
    rows = [e['attentions'][kind][key] for e in entries]
    width = max(len(r) for r in rows)
    rows = [r + [float('nan')] * (width - len(r)) for r in rows]
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * width,
                                    1.2 + 0.22 * len(rows)))
    image = ax.imshow(rows, aspect='auto', cmap='viridis')
    ax.set_yticks(range(len(rows)), [_short(e['layer']) for e in entries],
                  fontsize=7)
    ax.set_xticks(range(width), xticks(width), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label='mean over images')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _boxes(plt, panels, title, path):
    """``panels``: (entries, kind, label) per subplot, one box per layer:
    median, quartiles, whiskers at the 5th and 95th percentiles."""
    fig, axes = plt.subplots(
        len(panels), 1, squeeze=False,
        figsize=(max(6, 0.18 * max(len(p[0]) for p in panels) + 2),
                 2.8 * len(panels)))
    for ax, (entries, kind, label) in zip(axes[:, 0], panels):
        stats = [dict({k: e['attentions'][kind][v]
                       for k, v in _BOX.items()},
                      mean=e['attentions'][kind]['mean'], fliers=[])
                 for e in entries]
        ax.bxp(stats, showmeans=True, showfliers=False,
               meanprops=dict(marker='.', markersize=4))
        ax.set_xticks(range(1, len(entries) + 1),
                      [_short(e['layer']) for e in entries], rotation=90,
                      fontsize=6)
        ax.set_ylabel(label)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention_summary(summary: List[dict], out_dir: str,
                           title: str = '') -> List[str]:
    """Write the figures for what ``summary`` holds into ``out_dir`` and
    return their paths:

    - ``spatial.png``: mean spatial attention per kernel position, per layer;
    - ``kernel.png``: mean attention of each kernel, per layer;
    - ``channel_filter.png``: distributions of the input-channel and filter
      attentions per layer (box: quartiles, whiskers: 5th-95th percentile,
      dot: mean);
    - ``dcd.png``: normalised variance of Φ(x) per layer, and the
      distribution of Λ(x).
    """
    plt = _pyplot()
    suffix = f'\n{title}' if title else ''
    written = []

    def path(name):
        written.append(osp.join(out_dir, name))
        return written[-1]

    spatial = [e for e in _with(summary, 'spatial')
               if len(e['attentions']['spatial']['per_position']) > 1]
    if spatial:
        size = spatial[0]['kernel_size']
        _heatmap(plt, spatial, 'spatial', 'per_position',
                 f'spatial attention per kernel position{suffix}',
                 f'kernel position (row, column) of a '
                 f'{size[0]}x{size[1]} kernel',
                 lambda n: [f'{i // size[1]},{i % size[1]}'
                            for i in range(n)], path('spatial.png'))
    kernel = _with(summary, 'kernel')
    if kernel:
        _heatmap(plt, kernel, 'kernel', 'per_kernel',
                 f'kernel attention per kernel{suffix}', 'kernel',
                 lambda n: [str(i) for i in range(n)], path('kernel.png'))
    panels = [(entries, kind, f'{kind} attention')
              for kind in ('channel', 'filter')
              for entries in [_with(summary, kind)] if entries]
    if panels:
        _boxes(plt, panels,
               'input-channel and filter attention per layer\n(box: '
               'quartiles, whiskers: 5th-95th percentile, dot: mean)'
               f'{suffix}',
               path('channel_filter.png'))
    phi = _with(summary, 'phi')
    if phi:
        fig, (top, bottom) = plt.subplots(
            2, 1, figsize=(max(6, 0.18 * len(phi) + 2), 5.6))
        top.plot(range(1, len(phi) + 1),
                 [e['attentions']['phi']['normalized_variance']
                  for e in phi], marker='o')
        top.set_ylabel('normalised var. of Φ(x)')
        top.set_title('DCD: how much Φ(x) varies over images, and Λ(x)'
                      f'{suffix}', fontsize=9)
        top.set_xticks(range(1, len(phi) + 1), [''] * len(phi))
        top.set_xlim(0.5, len(phi) + 0.5)
        stats = [dict({k: e['attentions']['scale'][v]
                       for k, v in _BOX.items()}, fliers=[]) for e in phi]
        bottom.bxp(stats, showfliers=False)
        bottom.set_ylabel('Λ(x)')
        bottom.set_xticks(range(1, len(phi) + 1),
                          [_short(e['layer']) for e in phi], rotation=90,
                          fontsize=6)
        fig.tight_layout()
        fig.savefig(path('dcd.png'), dpi=110)
        plt.close(fig)
    return written
