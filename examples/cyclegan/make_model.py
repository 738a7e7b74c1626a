"""Make the CycleGAN ResNet generator as ONNX, with random weights.

Run from the repository root with a PyTorch environment (examples/README.md)::

    python examples/cyclegan/make_model.py                     # generator.onnx, ngf 16, 9 blocks
    python examples/cyclegan/make_model.py --ngf 64 --out /tmp/cyclegan64.onnx   # the paper's

The network is the ResNet generator of CycleGAN (Zhu et al., ICCV 2017) as its reference
implementation builds it for 256 x 256 images: a reflection-padded 7x7 convolution, two
stride-2 3x3 convolutions down, ``--blocks`` residual blocks (reflection pad, 3x3 conv,
InstanceNorm, ReLU, reflection pad, 3x3 conv, InstanceNorm, plus the block's input), two
stride-2 transposed convolutions up, a reflection-padded 7x7 convolution and Tanh. Every
InstanceNorm is the reference's: no affine parameters, statistics of the image itself; every
convolution has a bias. Weights are drawn as the reference initializes them (normal, standard
deviation 0.02), seeded. ``--ngf 64`` is the published width (11.4 M parameters, 45 MB of
ONNX); the committed example uses 16 so that it stays small and simulates in minutes.

The script checks the file with ``onnx.checker`` and against PyTorch with onnxruntime on
images in [-1, 1], the range CycleGAN's inputs take. PyTorch is only a development tool here.
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17


def conv_norm_relu(cin, cout, kernel, stride=1, padding=0, reflect=0):
    layers = [nn.ReflectionPad2d(reflect)] if reflect else []
    return layers + [nn.Conv2d(cin, cout, kernel, stride, padding), nn.InstanceNorm2d(cout),
                     nn.ReLU(True)]


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(*conv_norm_relu(channels, channels, 3, reflect=1),
                                  nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                  nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.body(x)


def generator(ngf, blocks, channels=3):
    layers = conv_norm_relu(channels, ngf, 7, reflect=3)
    for k in range(2):
        layers += conv_norm_relu(ngf << k, ngf << (k + 1), 3, stride=2, padding=1)
    layers += [ResidualBlock(ngf * 4) for _ in range(blocks)]
    for k in range(2, 0, -1):
        layers += [nn.ConvTranspose2d(ngf << k, ngf << (k - 1), 3, 2, 1, output_padding=1),
                   nn.InstanceNorm2d(ngf << (k - 1)), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def initialize(model, seed):
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.normal_(module.bias, 0.0, 0.02)


def export(model, path, size):
    example = torch.rand(1, 3, size, size) * 2 - 1
    torch.onnx.export(model, (example,), str(path), opset_version=OPSET, dynamo=False,
                      input_names=["image"], output_names=["translated"],
                      dynamic_axes={"image": {0: "batch"}, "translated": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    images = (np.random.default_rng(1).random((2, 3, size, size), np.float32) * 2 - 1)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    got = ort.InferenceSession(str(path)).run(None, {"image": images})[0]
    print(f"{path}: onnxruntime vs PyTorch, max |difference| {np.abs(got - expected).max():.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ngf", type=int, default=16, help="filters of the first layer")
    parser.add_argument("--blocks", type=int, default=9, help="residual blocks")
    parser.add_argument("--size", type=int, default=256, help="image height and width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "generator.onnx")
    args = parser.parse_args()
    model = generator(args.ngf, args.blocks)
    initialize(model, args.seed)
    export(model.eval(), args.out, args.size)


if __name__ == "__main__":
    main()
