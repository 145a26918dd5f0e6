"""Genotype -> plain `torch.nn.Module`. A pure function of the genotype; imports no search library."""
from __future__ import annotations

import torch
from torch import nn

from autocnn.genotype import Genotype, HeadSpec, StageSpec
from autocnn.layers import ACTIVATIONS, ATTENTION, BLOCKS, LayerFactory


def _layer_factory(g: Genotype, spec: StageSpec) -> LayerFactory:
    return LayerFactory(
        act=spec.act or g.act, norm=spec.norm or g.norm, eps=g.norm_eps, conv=spec.conv,
        attention=spec.attention, ratio=spec.ratio, dilation=spec.dilation, bias=spec.bias,
    )


def _residual_blocks(g: Genotype) -> int:
    return sum(s.repeats for s in g.stages if BLOCKS.get(s.block).residual)


def _build_stages(g: Genotype, specs: tuple[StageSpec, ...], in_chs: int, drop_state: list[int] | None):
    """Build one nn.Sequential per stage; returns (modules, out channels).

    `drop_state` = [blocks seen, residual total] spreads the stochastic-depth rate linearly over the
    residual blocks of the body, as EfficientNet does (rate * index / total).
    """
    stages = []
    chs = in_chs
    for spec in specs:
        block_cls = BLOCKS.get(spec.block)
        layers = _layer_factory(g, spec)
        blocks = []
        for i in range(spec.repeats):
            out = block_cls.out_channels(chs, spec)
            drop = 0.0
            if drop_state is not None and block_cls.residual and drop_state[1]:
                drop = g.drop_path * drop_state[0] / drop_state[1]
                drop_state[0] += 1
            blocks.append(block_cls(chs, out, spec.stride if i == 0 else 1, spec, layers=layers, drop_path=drop))
            chs = out
        stages.append(nn.Sequential(*blocks))
    return stages, chs


def build_features(g: Genotype) -> tuple[nn.Sequential, nn.Sequential, int]:
    stem, chs = _build_stages(g, g.stem, g.in_chans, None)
    body, chs = _build_stages(g, g.stages, chs, [0, _residual_blocks(g)])
    return nn.Sequential(*stem), nn.Sequential(*body), chs


def feature_shape(g: Genotype) -> tuple[int, int, int]:
    """(C, H, W) of the last feature map at the genotype's resolution, computed on the meta device."""
    with torch.device("meta"):
        stem, body, _ = build_features(g)
        x = torch.empty(1, g.in_chans, g.resolution, g.resolution)
        # eval: BatchNorm in training mode refuses a single 1x1 sample, though shapes are all we need
        stem.eval()
        body.eval()
        return tuple(body(stem(x)).shape[1:])


class Head(nn.Module):
    """[attention] -> pool -> flatten -> hidden MLP -> dropout -> classifier (logits)."""

    def __init__(self, in_chs: int, spec: HeadSpec, num_classes: int, act: str, in_features: int) -> None:
        super().__init__()
        act_factory = ACTIVATIONS.get(spec.hidden_act or act)
        self.attn = ATTENTION.get(spec.attention)(in_chs, ratio=spec.ratio, act_layer=act_factory)
        pools = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}
        self.pool = pools[spec.pool](spec.pool_size) if spec.pool in pools else nn.Identity()
        self.flatten = nn.Flatten(1)
        hidden = []
        features = in_features
        for width in spec.hidden:
            hidden += [nn.Linear(features, width), act_factory(), nn.Dropout(spec.dropout)]
            features = width
        self.hidden = nn.Sequential(*hidden)
        self.dropout = nn.Dropout(spec.dropout) if not spec.hidden else nn.Identity()
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.pool(self.attn(x)))
        return self.fc(self.dropout(self.hidden(x)))


class Network(nn.Module):
    """A built genotype: `stem` -> `stages` -> `head`, each stage an nn.Sequential of blocks."""

    def __init__(self, genotype: Genotype) -> None:
        super().__init__()
        self.genotype = genotype
        self.stem, self.stages, self.num_features = build_features(genotype)
        head = genotype.head
        if head.pool == "flatten":
            c, h, w = feature_shape(genotype)
            in_features = c * h * w
        else:
            in_features = self.num_features * head.pool_size ** 2
        self.head = Head(self.num_features, head, genotype.num_classes, genotype.act, in_features)

    @property
    def blocks(self) -> list[nn.Module]:
        """Stem stages then body blocks, in forward order (what `freeze` counts)."""
        return list(self.stem) + [b for stage in self.stages for b in stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities: softmax, or independent sigmoids for a multi-label head."""
        logits = self(x)
        return logits.sigmoid() if self.genotype.head.multilabel else logits.softmax(-1)


def build_model(genotype: Genotype) -> Network:
    return Network(genotype)
