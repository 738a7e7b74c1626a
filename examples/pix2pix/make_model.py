"""Write a pix2pix U-Net generator as ONNX, with seeded random weights.

Run from the repository root with the development environment of examples/README.md::

    /tmp/torchenv/bin/python examples/pix2pix/make_model.py --ngf 8 \\
        -o examples/pix2pix/generator.onnx
    /tmp/torchenv/bin/python examples/pix2pix/make_model.py --ngf 64 -o /tmp/pix2pix64.onnx \\
        --calibration /tmp/pix2pix_calibration.npy --input /tmp/pix2pix_input.npy

The network is the U-Net generator of pix2pix (Isola et al., CVPR 2017) as the
pytorch-CycleGAN-and-pix2pix repository builds it (``UnetGenerator``, ``num_downs=8``,
BatchNorm, dropout), for 256x256 images of 3 channels in and out. It nests ``LEVELS`` skip
blocks; block ``i`` (0 outermost) maps ``outer`` channels at size ``s`` to ``inner`` channels
at ``s / 2`` and back:

* down: LeakyReLU(0.2) -> Conv 4x4 stride 2 pad 1 -> BatchNorm (the outermost block has only
  the Conv, reading the image; the innermost no BatchNorm);
* the next block inside, whose output is its input and its result concatenated on channels
  (the skip connection), so a block's up path reads ``2 * inner`` channels (the innermost:
  ``inner``);
* up: ReLU -> ConvTranspose 4x4 stride 2 pad 1 -> BatchNorm, then Dropout(0.5) in the three
  blocks inside the ``ngf * 8`` ones (the outermost ends with Tanh instead of BatchNorm).

Channels: ngf, 2 ngf, 4 ngf, then 8 ngf down to the 1x1 innermost level. Convolutions have no
bias before a BatchNorm, as in the reference. The activations here do not modify their input
in place: the skip carries the block's input, not its LeakyReLU.

Weights are N(0, 0.02) (the reference's initialisation). Every BatchNorm gets the running
statistics of its input over a batch of uniform [-1, 1] images (train mode, momentum None,
then eval), perturbed at random (mean shifted, variance scaled by 0.5..2) and a random affine
(scale 0.5..1.5, shift N(0, 0.1)), so that folding them is not trivial. The last
ConvTranspose is then scaled so that the Tanh's input has a standard deviation of
``TANH_INPUT_STD`` on those images: a trained generator uses the range of its Tanh, where at
the reference's initialisation the output would be nearly flat. Dropout is an identity
in eval mode. The model is exported at opset 17 with a dynamic batch axis, checked with
``onnx.checker`` and against PyTorch in onnxruntime (batch 1 and 2). PyTorch is only needed to
make the file; flexigan never imports it.
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

SEED = 0
OPSET = 17
LEVELS = 8
SIZE = 256
CHANNELS = 3
STAT_BATCH = 8
TANH_INPUT_STD = 0.5
#: Largest |onnxruntime - PyTorch| accepted.
TOLERANCE = 1e-4


class SkipBlock(nn.Module):
    """One level of the U-Net: down, the levels inside (``inner``, or None), up, and the skip
    (the input concatenated with the result) unless ``outermost``."""

    def __init__(self, outer, inner, inside=None, in_channels=None, outermost=False,
                 dropout=False):
        super().__init__()
        innermost = inside is None
        down = [nn.Conv2d(in_channels or outer, inner, 4, 2, 1, bias=False)]
        if not outermost:
            down.insert(0, nn.LeakyReLU(0.2))
        if not (outermost or innermost):
            down.append(nn.BatchNorm2d(inner))
        up_in = inner if innermost else 2 * inner
        up = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=outermost)]
        up += [nn.Tanh()] if outermost else [nn.BatchNorm2d(outer)]
        if dropout:
            up.append(nn.Dropout(0.5))
        self.outermost = outermost
        self.model = nn.Sequential(*down, *([inside] if inside else []), *up)

    def forward(self, x):
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


def unet(ngf, levels=LEVELS, channels=CHANNELS):
    """The pix2pix ``UnetGenerator(channels, channels, levels, ngf, use_dropout=True)``."""
    block = SkipBlock(ngf * 8, ngf * 8)
    for _ in range(levels - 5):
        block = SkipBlock(ngf * 8, ngf * 8, block, dropout=True)
    for k in (4, 2, 1):
        block = SkipBlock(ngf * k, ngf * 2 * k, block)
    return SkipBlock(channels, ngf, block, in_channels=channels, outermost=True)


def initialise(model, images, generator):
    """Weights N(0, 0.02); each BatchNorm's statistics over ``images``, then perturbed, and a
    random affine (see the module docstring)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            std = module.running_var.sqrt()
            with torch.no_grad():
                module.running_mean += 0.2 * std * torch.randn(n, generator=generator)
                module.running_var *= 0.5 + 1.5 * torch.rand(n, generator=generator)
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    last = model.model[-2]
    with torch.no_grad():
        before_tanh = model.model[:-1](images)
        last.weight *= TANH_INPUT_STD / before_tanh.std()


def images(batch, generator):
    """``batch`` images uniform in [-1, 1] (the range of pix2pix's normalised inputs)."""
    return torch.rand(batch, CHANNELS, SIZE, SIZE, generator=generator) * 2 - 1


def export(model, path, generator):
    """Export ``model`` (eval mode) to ``path`` and check it in onnxruntime."""
    torch.onnx.export(model, (images(2, generator),), path, input_names=["image"],
                      output_names=["output"], opset_version=OPSET,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        x = images(batch, generator)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"image": x.numpy()})
        diff = float(np.abs(got - expected).max())
        print(f"{path.name}: batch {batch} output {got.shape} std {got.std():.3f} "
              f"max|diff| {diff:.2e}")
        assert got.shape == expected.shape and diff < TOLERANCE


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ngf", type=int, default=8, help="channels of the first level")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file")
    parser.add_argument("--calibration", type=Path,
                        help="also write this many images uniform in [-1, 1] here (.npy)")
    parser.add_argument("--samples", type=int, default=4, help="calibration images")
    parser.add_argument("--input", type=Path, help="also write one test image here (.npy)")
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = unet(args.ngf)
    initialise(model, images(STAT_BATCH, generator), generator)
    params = sum(p.numel() for p in model.parameters())
    print(f"U-Net ngf={args.ngf}: {params:,} parameters")
    export(model, args.output, generator)
    data = np.random.default_rng(SEED)
    if args.calibration:
        np.save(args.calibration, data.uniform(-1, 1, (args.samples, CHANNELS, SIZE, SIZE))
                .astype(np.float32))
    if args.input:
        np.save(args.input, data.uniform(-1, 1, (1, CHANNELS, SIZE, SIZE)).astype(np.float32))


if __name__ == "__main__":
    main()
