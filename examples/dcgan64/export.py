"""Export untrained replicas of the PyTorch DCGAN tutorial networks to ONNX.

Run from the repository root::

    python examples/dcgan64/export.py

The networks have the tutorial's structure (``nz=100``, ``ngf=64``,
``ndf=64``, ``nc=3``, 64x64 RGB images) and seeded random DCGAN-initialised
weights. Before export, every BatchNorm gets realistic running statistics: the
network runs in train mode on random inputs with ``momentum=None``, so the
running mean and variance are the cumulative averages of the layer's batch
statistics. The script writes ``generator.onnx`` and ``discriminator.onnx``
next to itself and checks them with ``onnx.checker`` and against PyTorch with
onnxruntime. PyTorch is only a development tool used to make these example
models; flexigan never imports it.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
NZ, NGF, NDF, NC = 100, 64, 64, 3
STAT_BATCHES = 20
STAT_BATCH_SIZE = 32
OPSET = 17
TOLERANCE = 1e-4
OUTPUT_STD_RANGE = (0.1, 0.9)


def make_generator():
    """Build the tutorial generator.

    Returns
    -------
    torch.nn.Sequential
        Maps a latent ``(N, 100, 1, 1)`` to an image ``(N, 3, 64, 64)`` in
        ``[-1, 1]`` through the spatial sizes 4, 8, 16, 32 and 64.
    """
    return nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(NGF * 8),
        nn.ReLU(),
        nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF * 4),
        nn.ReLU(),
        nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF * 2),
        nn.ReLU(),
        nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF),
        nn.ReLU(),
        nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


def make_discriminator():
    """Build the tutorial discriminator.

    Returns
    -------
    torch.nn.Sequential
        Maps an image ``(N, 3, 64, 64)`` to the probability ``(N, 1, 1, 1)``
        that it is real, through the spatial sizes 32, 16, 8, 4 and 1.
    """
    return nn.Sequential(
        nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NDF * 2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NDF * 4),
        nn.LeakyReLU(0.2),
        nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NDF * 8),
        nn.LeakyReLU(0.2),
        nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )


def dcgan_init(module):
    """Apply the DCGAN weight initialisation to one module.

    Parameters
    ----------
    module : torch.nn.Module
        Convolution weights are drawn from N(0, 0.02) and BatchNorm scales
        from N(1, 0.02) with zero shift; other modules are left unchanged.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def calibrate_batchnorm(model, sample):
    """Set every BatchNorm's running statistics from random batches.

    Parameters
    ----------
    model : torch.nn.Module
        Model whose BatchNorm layers are updated in place. It is left in
        eval mode.
    sample : callable
        ``sample(batch_size)`` returns one random input batch.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for _ in range(STAT_BATCHES):
            model(sample(STAT_BATCH_SIZE))
    model.eval()


def export(model, example, path, input_name, output_name):
    """Export an eval-mode model to ONNX with a dynamic batch axis.

    Parameters
    ----------
    model : torch.nn.Module
        Model to export, already in eval mode.
    example : torch.Tensor
        Example input (batch size at least 2).
    path : pathlib.Path
        Destination ``.onnx`` file; all weights are stored inside it.
    input_name, output_name : str
        Names of the graph input and output.
    """
    torch.onnx.export(
        model,
        (example,),
        path,
        input_names=[input_name],
        output_names=[output_name],
        opset_version=OPSET,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
    )


def check(model, path, input_name, sample):
    """Validate an exported file and compare onnxruntime with PyTorch.

    Parameters
    ----------
    model : torch.nn.Module
        The eval-mode model that was exported.
    path : pathlib.Path
        The exported ``.onnx`` file.
    input_name : str
        Name of the graph input.
    sample : callable
        ``sample(batch_size)`` returns one random input batch.

    Returns
    -------
    numpy.ndarray
        The onnxruntime output for the batch of 5.

    Raises
    ------
    AssertionError
        If the largest absolute difference reaches ``TOLERANCE``.
    """
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = sample(batch)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {input_name: x.numpy()})
        diff = float(np.abs(got - expected).max())
        print(f"{path.name}: batch {batch} shape {got.shape} max|diff| {diff:.2e}")
        assert got.shape == expected.shape and diff < TOLERANCE
    return got


def main():
    """Build, calibrate, export and check both networks."""
    torch.manual_seed(SEED)
    rng = torch.Generator().manual_seed(SEED)

    def latents(batch):
        return torch.randn(batch, NZ, 1, 1, generator=rng)

    def images(batch):
        return torch.rand(batch, NC, 64, 64, generator=rng) * 2.0 - 1.0

    gen, disc = make_generator(), make_discriminator()
    gen.apply(dcgan_init)
    disc.apply(dcgan_init)
    calibrate_batchnorm(gen, latents)
    calibrate_batchnorm(disc, images)

    export(gen, latents(2), HERE / "generator.onnx", "z", "image")
    export(disc, images(2), HERE / "discriminator.onnx", "image", "score")
    generated = check(gen, HERE / "generator.onnx", "z", latents)
    scores = check(disc, HERE / "discriminator.onnx", "image", images)

    low, high = OUTPUT_STD_RANGE
    print(
        f"generator output std {generated.std():.4f}, "
        f"range [{generated.min():.3f}, {generated.max():.3f}]"
    )
    print(f"discriminator scores {np.round(scores.ravel(), 4)}")
    assert low < generated.std() < high, "generator output is saturated or flat"


if __name__ == "__main__":
    main()
