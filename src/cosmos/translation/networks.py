"""Networks of the target-aware domain translation (COSMOS paper 3.1 and 4.2).

* :class:`Generator` - a U-Net with ``levels`` down-sampling steps (the paper: 3). One encoder G_E
  feeds two decoders: the translation decoder G_D (one image channel, ``tanh`` -> [-1, 1]) and the
  segmentation decoder G_S (3 logits: background / VS / cochlea). BOTH decoders read the same
  encoder features INCLUDING the skip connections, so the segmentation loss shapes the features the
  translator uses; that is the whole point of "target-aware" translation.
  ``with_seg=False`` builds no G_S (the pure CycleGAN ablation, "DA w/o Seg.").
* :class:`PatchDiscriminator` - the PatchGAN of pix2pix/CycleGAN: strided 4x4 convolutions ending in
  a map of real/fake logits, one per receptive-field patch.

Instance normalisation (as in CycleGAN) rather than batch norm: every slice is normalised on its
own, so converting a volume in chunks of any size gives exactly the same result as one big batch,
and the trained model has no running statistics that depend on the training batch size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

NUM_SEG_CLASSES = 3  # background, VS, cochlea


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to rebuild a generator from a state_dict (stored in translator.json)."""

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 16
    levels: int = 3
    with_seg: bool = True
    seg_classes: int = NUM_SEG_CLASSES

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + InstanceNorm + LeakyReLU: the unit of every U-Net level."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.InstanceNorm2d(cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.InstanceNorm2d(cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class Encoder(nn.Module):
    """G_E: ``levels`` resolution steps plus a bottleneck; returns the skips and the bottleneck."""

    def __init__(self, in_channels: int, base: int, levels: int):
        super().__init__()
        widths = [base * 2**i for i in range(levels + 1)]
        self.blocks = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.blocks.append(_conv_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _conv_block(widths[-2], widths[-1])
        self.widths = widths

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        return skips, self.bottleneck(x)


class Decoder(nn.Module):
    """A U-Net decoder over the encoder's skips; used for both G_D and G_S."""

    def __init__(self, widths: list[int], out_channels: int):
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            # bilinear upsampling + 1x1 conv instead of a transposed conv: no checkerboard artefacts,
            # which matter in a translator whose output is an image
            self.ups.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(widths[i], widths[i - 1], 1),
                )
            )
            self.blocks.append(_conv_block(2 * widths[i - 1], widths[i - 1]))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class Generator(nn.Module):
    """G = (G_E, G_D, G_S). ``forward`` = the converter C = G_D o G_E; ``segment`` = Seg = G_S o G_E."""

    def __init__(self, spec: GeneratorSpec):
        super().__init__()
        self.spec = spec
        self.encoder = Encoder(spec.in_channels, spec.base_channels, spec.levels)
        self.translation_decoder = Decoder(self.encoder.widths, spec.out_channels)
        self.segmentation_decoder = Decoder(self.encoder.widths, spec.seg_classes) if spec.with_seg else None

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this (one halving per level)."""
        return 2**self.spec.levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, bottom = self.encoder(x)
        return torch.tanh(self.translation_decoder(skips, bottom))

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        if self.segmentation_decoder is None:
            raise RuntimeError("this generator was built without a segmentation decoder (segmentor=False)")
        skips, bottom = self.encoder(x)
        return self.segmentation_decoder(skips, bottom)

    def translate_and_segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One encoder pass feeding both decoders (the training path; cheaper than two calls)."""
        skips, bottom = self.encoder(x)
        image = torch.tanh(self.translation_decoder(skips, bottom))
        seg = self.segmentation_decoder(skips, bottom) if self.segmentation_decoder is not None else None
        return image, seg


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``layers`` stride-2 4x4 convolutions, one stride-1 conv, then a 1-channel logit map."""

    def __init__(self, in_channels: int = 1, base: int = 16, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, base, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        c = base
        for i in range(1, layers):
            nc = base * min(2**i, 8)
            mods += [
                nn.Conv2d(c, nc, 4, stride=2, padding=1, bias=False),
                nn.InstanceNorm2d(nc, affine=True),
                nn.LeakyReLU(0.2, True),
            ]
            c = nc
        nc = base * min(2**layers, 8)
        mods += [
            nn.Conv2d(c, nc, 4, stride=1, padding=1, bias=False),
            nn.InstanceNorm2d(nc, affine=True),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(nc, 1, 4, stride=1, padding=1),
        ]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """CycleGAN's N(0, 0.02) initialisation for convolutions; norms start as identity."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
