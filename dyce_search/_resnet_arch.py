"""Analytic MACs of torchvision's ImageNet ResNets, block by block (numpy only, no torch).

Counts what ``torch.utils.flop_counter`` counts (convolutions and matrix
multiplies, MACs = FLOPs / 2): every convolution, the downsample 1x1
convolutions and the final fc. BatchNorm, ReLU, pooling and residual additions
are not counted, and neither is the global average pooling in front of an exit.
"""

from __future__ import annotations

from dataclasses import dataclass

#: residual blocks per stage (layer1..layer4) and whether blocks are Bottlenecks
RESNET_BLOCKS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
    "resnet152": ((3, 8, 36, 3), True),
}

_STAGE_PLANES = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)


@dataclass(frozen=True)
class BlockInfo:
    """One residual block: its name (``layer3.22``), output channels, reduction, own and cumulative MACs."""

    name: str
    channels: int
    reduction: int
    macs: int
    cumulative_macs: int


def _conv(h_out: int, c_in: int, c_out: int, kernel: int) -> int:
    return h_out * h_out * c_in * c_out * kernel * kernel


def _out_size(h: int, kernel: int, stride: int, padding: int) -> int:
    return (h + 2 * padding - kernel) // stride + 1


def resnet_blocks(backbone: str, num_classes: int = 1000, image_size: int = 224) -> tuple[list[BlockInfo], int]:
    """Residual blocks of a torchvision ResNet with their MACs, and the whole model's MACs.

    Bottleneck blocks put the stride on the 3x3 convolution (torchvision's
    "ResNet V1.5").

    Parameters
    ----------
    backbone : str
        One of :data:`RESNET_BLOCKS`.
    num_classes : int
        Outputs of the fc head.
    image_size : int
        Side of the square input image.

    Returns
    -------
    blocks : list[BlockInfo]
        All residual blocks in depth order; ``cumulative_macs`` runs from the
        input image (stem included) to the block's output.
    total_macs : int
        MACs of the whole model, fc head included.
    """
    if backbone not in RESNET_BLOCKS:
        raise ValueError(f"unknown backbone {backbone!r}; supported: {', '.join(RESNET_BLOCKS)}")
    stages, bottleneck = RESNET_BLOCKS[backbone]
    expansion = 4 if bottleneck else 1

    h = _out_size(image_size, 7, 2, 3)
    total = _conv(h, 3, 64, 7)  # stem conv1
    h = _out_size(h, 3, 2, 1)  # maxpool
    in_ch = 64
    blocks = []
    for s, (n_blocks, planes, stage_stride) in enumerate(zip(stages, _STAGE_PLANES, _STAGE_STRIDES)):
        for b in range(n_blocks):
            stride = stage_stride if b == 0 else 1
            h_out = _out_size(h, 3, stride, 1)
            out_ch = planes * expansion
            if bottleneck:
                macs = _conv(h, in_ch, planes, 1) + _conv(h_out, planes, planes, 3) + _conv(h_out, planes, out_ch, 1)
            else:
                macs = _conv(h_out, in_ch, planes, 3) + _conv(h_out, planes, planes, 3)
            if stride != 1 or in_ch != out_ch:
                macs += _conv(h_out, in_ch, out_ch, 1)
            total += macs
            blocks.append(BlockInfo(f"layer{s + 1}.{b}", out_ch, image_size // h_out, macs, total))
            in_ch, h = out_ch, h_out
    total += in_ch * num_classes  # fc (bias is not a multiply)
    return blocks, total


def mlp_macs(in_features: int, hidden, num_classes: int) -> int:
    """MACs of an MLP exit: the Linear layers in -> hidden[0] -> ... -> num_classes (GAP counted as 0)."""
    widths = [in_features, *hidden, num_classes]
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))
