"""Torch-only source text for every registered layer and block kind, emitted into an exported `model.py`.

One template per registry member (activations, norms, conv kinds, attention, blocks), written to build
exactly the module tree autocnn's own classes build: the same attribute names registered in the same
order, so `load_state_dict` takes autocnn's state_dict keys unchanged. Templates may use only `math`,
`collections.OrderedDict`, `torch`, `nn` and `F` (imported at the top of every generated file) and
the shared snippets named in `requires`.

A registry member without a template cannot be exported; the registry-driven tests list every
registered name, so adding a block kind without its template fails there, not in a user's export.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    """`source` is emitted once; `requires` names `SNIPPETS` it needs, emitted before it."""

    source: str
    requires: tuple[str, ...] = ()


def _src(text: str) -> str:
    return text.strip("\n") + "\n"


# -- activations: one factory expression per name --------------------------------------------------
ACTIVATIONS: dict[str, str] = {
    "relu": "lambda: nn.ReLU(inplace=True)",
    "relu6": "lambda: nn.ReLU6(inplace=True)",
    "silu": "lambda: nn.SiLU(inplace=True)",
    "swish": "lambda: nn.SiLU(inplace=True)",
    "hardswish": "lambda: nn.Hardswish(inplace=True)",
    "gelu": "lambda: nn.GELU()",
    "tanh": "lambda: nn.Tanh()",
    "sigmoid": "lambda: nn.Sigmoid()",
}

# -- norms: (function name, source) ------------------------------------------------------------------
NORMS: dict[str, tuple[str, str]] = {
    "batch": ("batch_norm", _src('''
def batch_norm(channels, eps):
    return nn.BatchNorm2d(channels, eps=eps)
''')),
    "group": ("group_norm", _src('''
def group_norm(channels, eps):
    """32 groups where the width allows (Wu & He), otherwise the largest common divisor."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=eps)
''')),
    "none": ("no_norm", _src('''
def no_norm(channels, eps):
    return nn.Identity()
''')),
}

# -- conv kinds: (function name, source); signature (in, out, kernel, stride, padding, dilation, groups, bias)
CONVS: dict[str, tuple[str, str]] = {
    "standard": ("standard_conv", _src('''
def standard_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias):
    return nn.Conv2d(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias=bias)
''')),
    "depthwise": ("depthwise_conv", _src('''
def depthwise_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias):
    """One group per input channel; with in != out the widest grouped conv that fits."""
    return nn.Conv2d(in_chs, out_chs, kernel, stride, padding, dilation, math.gcd(in_chs, out_chs), bias=bias)
''')),
    "separable": ("separable_conv", _src('''
def separable_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias):
    """Depthwise then pointwise, nothing between (Keras SeparableConv2D)."""
    return nn.Sequential(OrderedDict(
        dw=nn.Conv2d(in_chs, in_chs, kernel, stride, padding, dilation, in_chs, bias=False),
        pw=nn.Conv2d(in_chs, out_chs, 1, bias=bias),
    ))
''')),
    "separable_pw": ("separable_pw_conv", _src('''
def separable_pw_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias):
    """Pointwise then depthwise (the order of the Xception paper)."""
    return nn.Sequential(OrderedDict(
        pw=nn.Conv2d(in_chs, out_chs, 1, bias=False),
        dw=nn.Conv2d(out_chs, out_chs, kernel, stride, padding, dilation, out_chs, bias=bias),
    ))
''')),
}

# -- attention: (class or function name, Template); contract (channels, *, ratio, act_layer, rd_channels)
ATTENTION: dict[str, tuple[str, Template]] = {
    "none": ("no_attention", Template(_src('''
def no_attention(channels, *, ratio, act_layer, rd_channels=None):
    return nn.Identity()
'''))),
    "se": ("SqueezeExcite", Template(_src('''
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): x * sigmoid(fc2(act(fc1(avgpool(x)))))."""

    def __init__(self, channels, *, ratio=16.0, act_layer=nn.ReLU, rd_channels=None):
        super().__init__()
        rd = reduced_channels(channels, ratio, rd_channels)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x):
        scale = x.mean((2, 3), keepdim=True)
        scale = self.fc2(self.act(self.fc1(scale)))
        return x * scale.sigmoid()
'''), requires=("reduced_channels",))),
    "se_fc": ("SqueezeExciteFC", Template(_src('''
class SqueezeExciteFC(nn.Module):
    """Squeeze-and-Excitation with fully connected layers, as the paper writes it."""

    def __init__(self, channels, *, ratio=16.0, act_layer=nn.ReLU, rd_channels=None):
        super().__init__()
        rd = reduced_channels(channels, ratio, rd_channels)
        self.fc1 = nn.Linear(channels, rd)
        self.act = act_layer()
        self.fc2 = nn.Linear(rd, channels)

    def forward(self, x):
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3)))))
        return x * scale.sigmoid()[:, :, None, None]
'''), requires=("reduced_channels",))),
    "cbam": ("CBAM", Template(_src('''
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel then spatial attention."""

    def __init__(self, channels, *, ratio=16.0, act_layer=nn.ReLU, rd_channels=None, spatial_kernel=7):
        super().__init__()
        rd = reduced_channels(channels, ratio, rd_channels)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=False)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=False)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    def forward(self, x):
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        x = x * (avg + mx).sigmoid()
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * self.spatial(pooled).sigmoid()
'''), requires=("reduced_channels",))),
    "eca": ("ECA", Template(_src('''
def eca_kernel_size(channels, gamma=2, beta=1):
    """k = |log2(C)/gamma + beta/gamma|, rounded up to an odd number (Wang et al. 2020)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient Channel Attention: a 1-D conv across the pooled channel descriptor."""

    def __init__(self, channels, *, ratio=16.0, act_layer=nn.ReLU, rd_channels=None):
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        scale = self.conv(x.mean((2, 3)).unsqueeze(1)).squeeze(1)
        return x * scale.sigmoid()[:, :, None, None]
'''))),
}

# -- shared snippets, emitted in this order when some template requires them -----------------------
SNIPPETS: dict[str, str] = {
    "reduced_channels": _src('''
def reduced_channels(channels, ratio, rd_channels):
    return rd_channels if rd_channels is not None else max(1, int(channels / ratio))
'''),
    "make_divisible": _src('''
def make_divisible(value, divisor=8, min_value=None):
    """Round a width to a multiple of `divisor` without losing more than 10 % (MobileNetV2 rule)."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value
'''),
    "DropPath": _src('''
class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016); the identity in eval mode."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"
'''),
    "projection": _src('''
def projection(in_chs, out_chs, stride, layers):
    """1x1 strided projection on the identity path when the shape changes (ResNet option B)."""
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return nn.Sequential(layers.conv(in_chs, out_chs, 1, stride, kind="standard", padding=0, bias=False),
                         layers.norm(out_chs))
'''),
    "Pool": _src('''
class _Pool(Block):
    pool_cls = None

    @classmethod
    def out_channels(cls, in_chs, spec):
        return in_chs

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.pool = self.pool_cls(spec.kernel, stride, spec.padding or 0, ceil_mode=spec.ceil_mode)

    def forward(self, x):
        return self.pool(x)
'''),
    "InvertedResidual": _src('''
def expanded_width(in_chs, expansion):
    return make_divisible(in_chs * expansion, 8)


def squeeze_width(in_chs, ratio):
    """EfficientNet squeezes from the block's input width, not the expanded one."""
    return max(1, int(in_chs / ratio))


class _InvertedResidual(Block):
    residual = True

    def _finish(self, in_chs, out_chs, stride, drop_path):
        self.use_residual = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path) if drop_path and self.use_residual else nn.Identity()

    def forward(self, x):
        out = self.project(self.attn(self.conv(self.expand(x))))
        return self.drop_path(out) + x if self.use_residual else out
'''),
    "Inception": _src('''
STANDARD = "standard"  # 1x1 convs stay standard convs whatever the stage's conv kind


class _Inception(Block):
    """Parallel branches, concatenated; widths from `spec.widths` or scaled from the reference module."""

    WIDTHS = ()
    REFERENCE = ()
    REFERENCE_WIDTH = 1
    OUTPUTS = ()  # indices into WIDTHS of the convs that end a branch
    reduction = False

    @classmethod
    def _branch_total(cls, widths):
        return sum(widths[i] for i in cls.OUTPUTS)

    @classmethod
    def widths_for(cls, in_chs, spec):
        if spec.widths:
            return tuple(spec.widths)
        base = spec.out_chs or in_chs
        return tuple(make_divisible(base * w / cls.REFERENCE_WIDTH, 8) for w in cls.REFERENCE)

    @classmethod
    def out_channels(cls, in_chs, spec):
        added = cls._branch_total(cls.widths_for(in_chs, spec))
        return in_chs + added if cls.reduction else added

    def forward(self, x):
        return self.attn(torch.cat(self.branches(x), 1))
'''),
    "InceptionReduction": _src('''
def _reduction_padding(stride, layers):
    """Padding of a grid reduction's strided 3x3 convs, matched to its unpadded 3x3 max-pool."""
    if stride == 1:
        return None, 1
    return layers.dilation - 1, 0


class _Reduction(_Inception):
    reduction = True

    def forward(self, x):
        return self.attn(torch.cat(self.branches(x) + [self.branch_pool(x)], 1))
'''),
}

# -- blocks: (class name, Template); contract (in_chs, out_chs, stride, spec, *, layers, drop_path) ----
BLOCKS: dict[str, tuple[str, Template]] = {
    "conv": ("ConvBlock", Template(_src('''
class ConvBlock(Block):
    """conv -> norm -> act [-> attention]: one layer of a LeNet/AlexNet/VGG-style stack."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.conv = layers.conv(in_chs, out_chs, spec.kernel, stride, padding=spec.padding, groups=spec.groups)
        self.bn = layers.norm(out_chs)
        self.act = layers.act()
        self.attn = layers.attention(out_chs)

    def forward(self, x):
        return self.attn(self.act(self.bn(self.conv(x))))
'''))),
    "maxpool": ("MaxPool", Template(_src('''
class MaxPool(_Pool):
    pool_cls = nn.MaxPool2d
'''), requires=("Pool",))),
    "avgpool": ("AvgPool", Template(_src('''
class AvgPool(_Pool):
    pool_cls = nn.AvgPool2d
'''), requires=("Pool",))),
    "norm_act": ("NormAct", Template(_src('''
class NormAct(Block):
    """norm -> act with no conv (DenseNet's closing BN-ReLU)."""

    @classmethod
    def out_channels(cls, in_chs, spec):
        return in_chs

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.bn = layers.norm(in_chs)
        self.act = layers.act()

    def forward(self, x):
        return self.act(self.bn(x))
'''))),
    "basic": ("BasicBlock", Template(_src('''
class BasicBlock(Block):
    """ResNet basic block: two kxk convs; attention on the residual branch before the addition."""

    residual = True

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.conv1 = layers.conv(in_chs, out_chs, spec.kernel, stride, groups=spec.groups)
        self.bn1 = layers.norm(out_chs)
        self.act1 = layers.act()
        self.conv2 = layers.conv(out_chs, out_chs, spec.kernel, groups=spec.groups)
        self.bn2 = layers.norm(out_chs)
        self.attn = layers.attention(out_chs)
        self.downsample = projection(in_chs, out_chs, stride, layers)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act2 = layers.act()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.act2(self.drop_path(out) + self.downsample(x))
'''), requires=("projection", "DropPath"))),
    "bottleneck": ("Bottleneck", Template(_src('''
def bottleneck_width(out_chs, expansion, groups):
    """mid = out / expansion, rounded to a multiple of `groups`."""
    return max(groups, round(out_chs / expansion / groups) * groups)


class Bottleneck(Block):
    """ResNet bottleneck: 1x1 reduce -> kxk (stride, groups) -> 1x1 expand, plus the identity."""

    residual = True

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        mid = bottleneck_width(out_chs, spec.expansion, spec.groups)
        self.conv1 = layers.conv(in_chs, mid, 1, kind="standard")
        self.bn1 = layers.norm(mid)
        self.act1 = layers.act()
        self.conv2 = layers.conv(mid, mid, spec.kernel, stride, groups=spec.groups)
        self.bn2 = layers.norm(mid)
        self.act2 = layers.act()
        self.conv3 = layers.conv(mid, out_chs, 1, kind="standard")
        self.bn3 = layers.norm(out_chs)
        self.attn = layers.attention(out_chs)
        self.downsample = projection(in_chs, out_chs, stride, layers)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act3 = layers.act()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.act3(self.drop_path(out) + self.downsample(x))
'''), requires=("projection", "DropPath"))),
    "dense": ("DenseLayer", Template(_src('''
class DenseLayer(Block):
    """DenseNet layer: BN-act-1x1-BN-act-kxk(growth), concatenated to its input."""

    @classmethod
    def out_channels(cls, in_chs, spec):
        return in_chs + spec.out_chs

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        growth = spec.out_chs
        mid = max(1, int(spec.expansion * growth))
        self.norm1 = layers.norm(in_chs)
        self.act1 = layers.act()
        self.conv1 = layers.conv(in_chs, mid, 1, kind="standard")
        self.norm2 = layers.norm(mid)
        self.act2 = layers.act()
        self.conv2 = layers.conv(mid, growth, spec.kernel, stride)
        self.attn = layers.attention(growth)

    def forward(self, x):
        new = self.conv1(self.act1(self.norm1(x)))
        new = self.attn(self.conv2(self.act2(self.norm2(new))))
        return torch.cat([x, new], 1)
'''))),
    "transition": ("Transition", Template(_src('''
class Transition(Block):
    """DenseNet transition: BN-act-1x1 conv (compression), then average pooling by `stride`."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.norm = layers.norm(in_chs)
        self.act = layers.act()
        self.conv = layers.conv(in_chs, out_chs, 1, kind="standard")
        self.attn = layers.attention(out_chs)
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()

    def forward(self, x):
        return self.pool(self.attn(self.conv(self.act(self.norm(x)))))
'''))),
    "mbconv": ("MBConv", Template(_src('''
class MBConv(_InvertedResidual):
    """MobileNetV2/EfficientNet block: 1x1 expand -> kxk conv -> attention -> 1x1 linear projection."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        mid = expanded_width(in_chs, spec.expansion)
        self.expand = layers.cna(in_chs, mid, 1, kind="standard") if mid != in_chs else nn.Identity()
        self.conv = layers.cna(mid, mid, spec.kernel, stride)
        self.attn = layers.attention(mid, rd_channels=squeeze_width(in_chs, spec.ratio))
        self.project = layers.cna(mid, out_chs, 1, kind="standard", act=False)
        self._finish(in_chs, out_chs, stride, drop_path)
'''), requires=("make_divisible", "DropPath", "InvertedResidual"))),
    "fused_mbconv": ("FusedMBConv", Template(_src('''
class FusedMBConv(_InvertedResidual):
    """EfficientNetV2 block: kxk expand -> attention -> 1x1 projection (a single kxk conv at expansion 1)."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        mid = expanded_width(in_chs, spec.expansion)
        self.expand = nn.Identity()
        if mid != in_chs:
            self.conv = layers.cna(in_chs, mid, spec.kernel, stride)
            self.attn = layers.attention(mid, rd_channels=squeeze_width(in_chs, spec.ratio))
            self.project = layers.cna(mid, out_chs, 1, kind="standard", act=False)
        else:
            self.conv = layers.cna(in_chs, out_chs, spec.kernel, stride)
            self.attn = layers.attention(out_chs, rd_channels=squeeze_width(in_chs, spec.ratio))
            self.project = nn.Identity()
        self._finish(in_chs, out_chs, stride, drop_path)
'''), requires=("make_divisible", "DropPath", "InvertedResidual"))),
    "inception_v1": ("InceptionV1", Template(_src('''
class InceptionV1(_Inception):
    """GoogLeNet module: 1x1 | 1x1-3x3 | 1x1-kxk | maxpool-1x1."""

    WIDTHS = ("c1x1", "c3x3red", "c3x3", "c5x5red", "c5x5", "pool_proj")
    REFERENCE, REFERENCE_WIDTH = (64, 96, 128, 16, 32, 32), 256
    OUTPUTS = (0, 2, 4, 5)

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        c1, c3r, c3, c5r, c5, cp = self.widths_for(in_chs, spec)
        self.branch1 = layers.cna(in_chs, c1, 1, kind=STANDARD)
        self.branch2 = nn.Sequential(layers.cna(in_chs, c3r, 1, kind=STANDARD), layers.cna(c3r, c3, 3))
        self.branch3 = nn.Sequential(layers.cna(in_chs, c5r, 1, kind=STANDARD), layers.cna(c5r, c5, spec.kernel))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), layers.cna(in_chs, cp, 1, kind=STANDARD))
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        return [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
'''), requires=("make_divisible", "Inception"))),
    "inception_v3_a": ("InceptionA", Template(_src('''
class InceptionA(_Inception):
    """Inception-v3 35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    WIDTHS = ("b1x1", "b5x5_1", "b5x5_2", "b3x3dbl_1", "b3x3dbl_2", "b3x3dbl_3", "pool_proj")
    REFERENCE, REFERENCE_WIDTH = (64, 48, 64, 64, 96, 96, 32), 256
    OUTPUTS = (0, 2, 5, 6)

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        self.branch1x1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch5x5_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch5x5_2 = layers.cna(w[1], w[2], 5)
        self.branch3x3dbl_1 = layers.cna(in_chs, w[3], 1, kind=STANDARD)
        self.branch3x3dbl_2 = layers.cna(w[3], w[4], 3)
        self.branch3x3dbl_3 = layers.cna(w[4], w[5], 3)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = layers.cna(in_chs, w[6], 1, kind=STANDARD)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(self.pool(x))]
'''), requires=("make_divisible", "Inception"))),
    "inception_v3_b": ("InceptionB", Template(_src('''
class InceptionB(_Reduction):
    """Inception-v3 grid reduction 35->17: 3x3/s2 | 1x1-3x3-3x3/s2 | maxpool/s2."""

    WIDTHS = ("b3x3", "b3x3dbl_1", "b3x3dbl_2", "b3x3dbl_3")
    REFERENCE, REFERENCE_WIDTH = (384, 64, 96, 96), 480
    OUTPUTS = (0, 3)

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        pad, pool_pad = _reduction_padding(stride, layers)
        self.branch3x3 = layers.cna(in_chs, w[0], 3, stride, padding=pad)
        self.branch3x3dbl_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch3x3dbl_2 = layers.cna(w[1], w[2], 3)
        self.branch3x3dbl_3 = layers.cna(w[2], w[3], 3, stride, padding=pad)
        self.branch_pool = nn.MaxPool2d(3, stride, pool_pad)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), b3]
'''), requires=("make_divisible", "Inception", "InceptionReduction"))),
    "inception_v3_c": ("InceptionC", Template(_src('''
class InceptionC(_Inception):
    """Inception-v3 17x17 module: 7x7 factorised into (1,7) and (7,1) convs."""

    WIDTHS = ("b1x1", "b7x7_1", "b7x7_2", "b7x7_3", "b7x7dbl_1", "b7x7dbl_2", "b7x7dbl_3",
              "b7x7dbl_4", "b7x7dbl_5", "pool_proj")
    REFERENCE, REFERENCE_WIDTH = (192, 128, 128, 192, 128, 128, 128, 128, 192, 192), 768
    OUTPUTS = (0, 3, 8, 9)

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        row, col = (1, 7), (7, 1)
        self.branch1x1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch7x7_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch7x7_2 = layers.cna(w[1], w[2], row)
        self.branch7x7_3 = layers.cna(w[2], w[3], col)
        self.branch7x7dbl_1 = layers.cna(in_chs, w[4], 1, kind=STANDARD)
        self.branch7x7dbl_2 = layers.cna(w[4], w[5], col)
        self.branch7x7dbl_3 = layers.cna(w[5], w[6], row)
        self.branch7x7dbl_4 = layers.cna(w[6], w[7], col)
        self.branch7x7dbl_5 = layers.cna(w[7], w[8], row)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = layers.cna(in_chs, w[9], 1, kind=STANDARD)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(d))))
        return [self.branch1x1(x), b7, d, self.branch_pool(self.pool(x))]
'''), requires=("make_divisible", "Inception"))),
    "inception_v3_d": ("InceptionD", Template(_src('''
class InceptionD(_Reduction):
    """Inception-v3 grid reduction 17->8: 1x1-3x3/s2 | 1x1-(1,7)-(7,1)-3x3/s2 | maxpool/s2."""

    WIDTHS = ("b3x3_1", "b3x3_2", "b7x7x3_1", "b7x7x3_2", "b7x7x3_3", "b7x7x3_4")
    REFERENCE, REFERENCE_WIDTH = (192, 320, 192, 192, 192, 192), 512
    OUTPUTS = (1, 5)

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        pad, pool_pad = _reduction_padding(stride, layers)
        self.branch3x3_1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch3x3_2 = layers.cna(w[0], w[1], 3, stride, padding=pad)
        self.branch7x7x3_1 = layers.cna(in_chs, w[2], 1, kind=STANDARD)
        self.branch7x7x3_2 = layers.cna(w[2], w[3], (1, 7))
        self.branch7x7x3_3 = layers.cna(w[3], w[4], (7, 1))
        self.branch7x7x3_4 = layers.cna(w[4], w[5], 3, stride, padding=pad)
        self.branch_pool = nn.MaxPool2d(3, stride, pool_pad)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return [b3, b7]
'''), requires=("make_divisible", "Inception", "InceptionReduction"))),
    "inception_v3_e": ("InceptionE", Template(_src('''
class InceptionE(_Inception):
    """Inception-v3 8x8 expanded filter bank: 3x3s split into parallel (1,3) and (3,1) convs."""

    WIDTHS = ("b1x1", "b3x3_1", "b3x3_2a", "b3x3_2b", "b3x3dbl_1", "b3x3dbl_2", "b3x3dbl_3a",
              "b3x3dbl_3b", "pool_proj")
    REFERENCE, REFERENCE_WIDTH = (320, 384, 384, 384, 448, 384, 384, 384, 192), 2048
    OUTPUTS = (0, 2, 3, 6, 7, 8)

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        row, col = (1, 3), (3, 1)
        self.branch1x1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch3x3_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch3x3_2a = layers.cna(w[1], w[2], row)
        self.branch3x3_2b = layers.cna(w[1], w[3], col)
        self.branch3x3dbl_1 = layers.cna(in_chs, w[4], 1, kind=STANDARD)
        self.branch3x3dbl_2 = layers.cna(w[4], w[5], 3)
        self.branch3x3dbl_3a = layers.cna(w[5], w[6], row)
        self.branch3x3dbl_3b = layers.cna(w[5], w[7], col)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = layers.cna(in_chs, w[8], 1, kind=STANDARD)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return [self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(self.pool(x))]
'''), requires=("make_divisible", "Inception"))),
    "xception": ("XceptionBlock", Template(_src('''
class XceptionBlock(Block):
    """Xception module: [act -> kxk conv -> norm] x n [-> maxpool], added to the (projected) input."""

    residual = True

    @classmethod
    def out_channels(cls, in_chs, spec):
        return spec.widths[-1] if spec.widths else (spec.out_chs or in_chs)

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        widths = tuple(spec.widths) or (out_chs,) * (2 if stride > 1 else 3)
        self.shortcut = projection(in_chs, out_chs, stride, layers)
        units, chs = [], in_chs
        for i, width in enumerate(widths):
            act = layers.act()
            if i == 0 and hasattr(act, "inplace"):
                act.inplace = False  # the block input is still needed by the shortcut
            units.append(nn.Sequential(OrderedDict(
                act=act, conv=layers.conv(chs, width, spec.kernel), bn=layers.norm(width))))
            chs = width
        self.units = nn.Sequential(*units)
        self.pool = nn.MaxPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.attn = layers.attention(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        shortcut = self.shortcut(x)
        out = self.attn(self.pool(self.units(x)))
        return self.drop_path(out) + shortcut
'''), requires=("projection", "DropPath"))),
}
