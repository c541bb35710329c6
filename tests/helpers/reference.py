"""Plain reference formulations of the four dynamic convolutions.

Each builds every sample's kernel exactly as the paper's equation says, from
the layer's raw parameters (attention branches and BatchNorm recomputed here,
not taken from the layer's modules), and calls ``F.conv2d`` once per sample.
The fast paths in ``mmdyn.layers`` are tested against these.

``mutate`` maps an attention name to 'drop' (use 1 instead) or 'twice'
(apply it twice); tests use it to show that the comparison would catch such
a bug.
"""
import torch
import torch.nn.functional as F

MUTATIONS = ('drop', 'twice')


def _apply(name, value, mutate):
    how = (mutate or {}).get(name)
    if how == 'drop':
        return torch.ones_like(value)
    if how == 'twice':
        return value * value
    assert how is None, how
    return value


def _linear(features, weight, bias=None):
    """features @ weight.T (+ bias), weight (out, in[, 1, 1])."""
    out = features @ weight.reshape(weight.shape[0], -1).T
    return out if bias is None else out + bias


def _bn_affine(values, bn, dims):
    """Scale and shift that BatchNorm ``bn`` applies to ``values``: batch
    statistics over ``dims`` when training, running ones otherwise."""
    if bn.training:
        mean = values.mean(dim=dims)
        var = values.var(dim=dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    if bn.weight is None:  # affine=False: no weight and no bias
        scale = 1 / torch.sqrt(var + bn.eps)
        return scale, -mean * scale
    scale = bn.weight / torch.sqrt(var + bn.eps)
    return scale, bn.bias - mean * scale


def _conv(layer, x, kernel, bias=None, groups=None):
    return F.conv2d(x, kernel, bias, layer.stride, layer.padding,
                    layer.dilation, layer.groups if groups is None else groups)


def odconv_reference(layer, x, mutate=None):
    """ODConv, Eq. 2: W(x) = sum_i a_wi a_fi a_ci a_si W_i."""
    att = layer.attention
    temp = layer.temperature
    hidden = _linear(x.mean(dim=(2, 3)), att.fc.weight)
    scale, shift = _bn_affine(hidden, att.bn, dims=(0, ))
    hidden = torch.relu(hidden * scale + shift)

    def head(name, activation):
        conv = getattr(att, name, None)
        if conv is None:
            return None
        logits = _linear(hidden, conv.weight, conv.bias) / temp
        return _apply(name, activation(logits), mutate)

    channel = head('channel_fc', torch.sigmoid)
    filter_ = head('filter_fc', torch.sigmoid)
    spatial = head('spatial_fc', torch.sigmoid)
    kernel_att = head('kernel_fc', lambda v: torch.softmax(v, dim=1))

    out_ch, in_per_group, kh, kw = layer.weight.shape[1:]
    groups = layer.groups
    outputs = []
    for b in range(x.shape[0]):
        if kernel_att is None:
            kernel = layer.weight[0]
        else:
            kernel = sum(kernel_att[b, i] * layer.weight[i]
                         for i in range(layer.kernel_num))
        if spatial is not None:
            kernel = kernel * spatial[b].view(1, 1, kh, kw)
        if filter_ is not None:
            kernel = kernel * filter_[b].view(out_ch, 1, 1, 1)
        # output channel o of group j sees input channels of group j only
        per_input = channel[b].view(groups, in_per_group).repeat_interleave(
            out_ch // groups, dim=0)
        kernel = kernel * per_input[:, :, None, None]
        outputs.append(_conv(layer, x[b:b + 1], kernel, layer.bias))
    return torch.cat(outputs)


def kernel_bank_reference(layer, attention, x):
    """Eq. 1: W(x) = sum_i a_i(x) W_i (and the same mix of biases)."""
    outputs = []
    for b in range(x.shape[0]):
        kernel = sum(attention[b, i] * layer.weight[i]
                     for i in range(layer.kernel_num))
        bias = None
        if layer.bias is not None:
            bias = sum(attention[b, i] * layer.bias[i]
                       for i in range(layer.kernel_num))
        outputs.append(_conv(layer, x[b:b + 1], kernel, bias))
    return torch.cat(outputs)


def dyconv_reference(layer, x, mutate=None):
    """DyConv: pi(x) = softmax(fc2(relu(fc1(GAP(x)))) / T)."""
    att = layer.attention
    hidden = torch.relu(
        _linear(x.mean(dim=(2, 3)), att.fc1.weight, att.fc1.bias))
    logits = _linear(hidden, att.fc2.weight, att.fc2.bias)
    pi = _apply('kernel', torch.softmax(logits / layer.temperature, dim=1),
                mutate)
    return kernel_bank_reference(layer, pi, x)


def condconv_reference(layer, x, mutate=None):
    """CondConv: r(x) = sigmoid(fc(GAP(x)) / T)."""
    att = layer.attention
    logits = _linear(x.mean(dim=(2, 3)), att.fc.weight, att.fc.bias)
    routing = _apply('kernel', torch.sigmoid(logits / layer.temperature),
                     mutate)
    return kernel_bank_reference(layer, routing, x)


def _gate(v):
    return torch.clamp(v + 3, 0, 6) / 3


def _centre_tap(matrix, kernel_size):
    """A kxk kernel that is ``matrix`` (out, in) at the centre, 0 elsewhere."""
    kh, kw = kernel_size
    kernel = matrix.new_zeros(*matrix.shape, kh, kw)
    kernel[:, :, (kh - 1) // 2, (kw - 1) // 2] = matrix
    return kernel


def dcd_reference(layer, x, mutate=None):
    """DCD as released: W(x) = Lambda(x) W0 + P (diag(a2) Phi(x) diag(a1) +
    diag(a1)) Q^T with a1, a2 the BatchNorm scales of bn1 and bn2, applied
    at the kernel's centre tap, plus the bias the BatchNorm shifts make."""
    batch = x.shape[0]
    latent = layer.latent_dim
    pooled = F.adaptive_avg_pool2d(x, layer.pool_size).flatten(1)
    hidden = _linear(pooled, layer.fc[0].weight)
    hidden = hidden * _gate(_linear(hidden, layer.fc[1].fc[0].weight))
    phi = _linear(hidden, layer.fc_phi.weight) / layer.temperature
    phi = _apply('phi', phi.view(batch, latent, latent), mutate)
    lam = _apply('scale',
                 _gate(_linear(hidden, layer.fc_scale.weight) /
                       layer.temperature), mutate)

    q_tap = _centre_tap(layer.q.weight[:, :, 0, 0], layer.kernel_size)
    projected = [_conv(layer, x[b:b + 1], q_tap, groups=1)[0]
                 for b in range(batch)]
    a1, c1 = _bn_affine(torch.stack(projected), layer.bn1, dims=(0, 2, 3))
    mixed = [phi[b] @ (a1[:, None] * u.flatten(1) + c1[:, None])
             for b, u in enumerate(projected)]
    a2, c2 = _bn_affine(torch.stack(mixed), layer.bn2, dims=(0, 2))
    identity = torch.eye(latent, dtype=x.dtype, device=x.device)
    if (mutate or {}).get('identity') == 'drop':
        identity = identity * 0

    p_matrix = layer.p.weight[:, :, 0, 0]
    q_matrix = layer.q.weight[:, :, 0, 0]
    outputs = []
    for b in range(batch):
        latent_map = a2[:, None] * phi[b] * a1[None, :] + identity * a1
        residual = p_matrix @ latent_map @ q_matrix
        bias = p_matrix @ (a2 * (phi[b] @ c1) + c2 + c1)
        if layer.bias is not None:
            bias = bias + layer.bias
        static = lam[b].view(-1, 1, 1, 1) * layer.conv.weight
        residual = _centre_tap(residual, layer.kernel_size)
        if layer.groups == 1:
            out = _conv(layer, x[b:b + 1], static + residual, bias)
        else:
            out = _conv(layer, x[b:b + 1], static, bias) + _conv(
                layer, x[b:b + 1], residual, groups=1)
        outputs.append(out)
    return torch.cat(outputs)


def per_sample_conv_reference(x, weight, bias, geometry):
    """``weight[b]`` (and ``bias[b]``) applied to sample ``b`` by one
    ``F.conv2d`` per sample, in ``geometry`` (stride, padding, dilation):
    what a per-sample conv's fast forms must compute."""
    return torch.cat([
        F.conv2d(x[i:i + 1], weight[i], None if bias is None else bias[i],
                 stride=geometry.stride, padding=geometry.padding,
                 dilation=geometry.dilation)
        for i in range(x.shape[0])
    ])
