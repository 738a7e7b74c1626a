"""Train a small DCGAN on scikit-learn's 8x8 digits and export it to ONNX.

Run from the repository root::

    python examples/digits/train.py

The script writes ``generator.onnx``, ``discriminator.onnx`` and
``samples.png`` next to itself, then checks both ONNX files with
``onnx.checker`` and against PyTorch with onnxruntime. PyTorch is only a
development tool used to make these example models; flexigan never imports it.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
LATENT_DIM = 16
BATCH_SIZE = 64
STEPS = 4000
LEARNING_RATE = 2e-4
BETAS = (0.5, 0.999)
OPSET = 17
TOLERANCE = 1e-4


def make_generator():
    """Build the generator.

    Returns
    -------
    torch.nn.Sequential
        Maps a latent ``(N, 16, 1, 1)`` to an image ``(N, 1, 8, 8)`` in
        ``[-1, 1]`` through the spatial sizes 2x2, 4x4 and 8x8. Layers
        followed by BatchNorm have no bias, as in DCGAN.
    """
    return nn.Sequential(
        nn.ConvTranspose2d(LATENT_DIM, 64, 2, 1, 0, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, 2, 1),
        nn.Tanh(),
    )


def make_discriminator():
    """Build the discriminator.

    Returns
    -------
    torch.nn.Sequential
        Maps an image ``(N, 1, 8, 8)`` to the probability ``(N, 1, 1, 1)``
        that it is real, through the spatial sizes 4x4, 2x2 and 1x1. The
        layer followed by BatchNorm has no bias, as in DCGAN.
    """
    return nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, 2, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 1, 2, 1, 0),
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


def load_images():
    """Load the digits dataset as images scaled to ``[-1, 1]``.

    Returns
    -------
    torch.Tensor
        Float tensor of shape ``(1797, 1, 8, 8)``.
    """
    pixels = load_digits().images.astype(np.float32)  # values 0..16
    return torch.from_numpy(pixels / 8.0 - 1.0).unsqueeze(1)


def batches(images, generator):
    """Yield shuffled training batches forever.

    Parameters
    ----------
    images : torch.Tensor
        The whole training set.
    generator : torch.Generator
        Source of randomness for the shuffling.

    Yields
    ------
    torch.Tensor
        A batch of ``BATCH_SIZE`` images; the last incomplete batch of each
        epoch is dropped.
    """
    count = len(images) // BATCH_SIZE * BATCH_SIZE
    while True:
        order = torch.randperm(len(images), generator=generator)[:count]
        yield from images[order].split(BATCH_SIZE)


def train(gen, disc, images):
    """Train the GAN with the standard DCGAN recipe.

    Parameters
    ----------
    gen, disc : torch.nn.Module
        Generator and discriminator, updated in place.
    images : torch.Tensor
        Real images in ``[-1, 1]``.

    Returns
    -------
    tuple of float
        Discriminator and generator loss, each averaged over the last 200
        steps.
    """
    rng = torch.Generator().manual_seed(SEED)
    opt_g = torch.optim.Adam(gen.parameters(), lr=LEARNING_RATE, betas=BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=LEARNING_RATE, betas=BETAS)
    bce = nn.BCELoss()
    ones = torch.ones(BATCH_SIZE, 1, 1, 1)
    zeros = torch.zeros(BATCH_SIZE, 1, 1, 1)
    history = []
    data = batches(images, rng)
    gen.train()
    disc.train()
    for step in range(1, STEPS + 1):
        real = next(data)
        fake = gen(torch.randn(BATCH_SIZE, LATENT_DIM, 1, 1, generator=rng))

        opt_d.zero_grad()
        loss_d = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()

        opt_g.zero_grad()
        loss_g = bce(disc(fake), ones)
        loss_g.backward()
        opt_g.step()

        history.append((loss_d.item(), loss_g.item()))
        if step % 500 == 0:
            mean_d, mean_g = np.mean(history[-200:], axis=0)
            print(f"step {step:5d}  loss_D {mean_d:.4f}  loss_G {mean_g:.4f}")
    mean_d, mean_g = np.mean(history[-200:], axis=0)
    return float(mean_d), float(mean_g)


def save_grid(images, path, scale=4):
    """Save 64 images as an 8x8 grid PNG.

    Parameters
    ----------
    images : torch.Tensor
        Tensor of shape ``(64, 1, H, W)`` with values in ``[-1, 1]``.
    path : pathlib.Path
        Destination file.
    scale : int, optional
        Nearest-neighbour upscaling factor for each pixel.
    """
    pixels = ((images.squeeze(1).numpy() + 1.0) * 127.5).clip(0, 255)
    pixels = np.pad(pixels.astype(np.uint8), ((0, 0), (1, 1), (1, 1)))
    side = pixels.shape[1]
    grid = pixels.reshape(8, 8, side, side).transpose(0, 2, 1, 3)
    grid = grid.reshape(8 * side, 8 * side).repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(grid).save(path)


def export(model, example, path, input_name, output_name):
    """Export a model in eval mode to ONNX with a dynamic batch axis.

    Parameters
    ----------
    model : torch.nn.Module
        Model to export; it is switched to eval mode.
    example : torch.Tensor
        Example input (batch size at least 2).
    path : pathlib.Path
        Destination ``.onnx`` file; all weights are stored inside it.
    input_name, output_name : str
        Names of the graph input and output.
    """
    model.eval()
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


def check(model, path, input_name, input_shape, rng):
    """Validate an exported file and compare onnxruntime with PyTorch.

    Parameters
    ----------
    model : torch.nn.Module
        The eval-mode model that was exported.
    path : pathlib.Path
        The exported ``.onnx`` file.
    input_name : str
        Name of the graph input.
    input_shape : tuple of int
        Input shape without the batch axis.
    rng : torch.Generator
        Source of the standard-normal test inputs.

    Raises
    ------
    AssertionError
        If the largest absolute difference reaches ``TOLERANCE``.
    """
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, *input_shape, generator=rng)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {input_name: x.numpy()})
        diff = float(np.abs(got - expected).max())
        print(f"{path.name}: batch {batch} shape {got.shape} max|diff| {diff:.2e}")
        assert got.shape == expected.shape and diff < TOLERANCE


def main():
    """Train, sample, export and check the digits GAN."""
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    gen, disc = make_generator(), make_discriminator()
    gen.apply(dcgan_init)
    disc.apply(dcgan_init)

    loss_d, loss_g = train(gen, disc, load_images())
    print(f"final (mean of last 200 steps): loss_D {loss_d:.4f}  loss_G {loss_g:.4f}")

    gen.eval()
    disc.eval()
    rng = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        save_grid(gen(torch.randn(64, LATENT_DIM, 1, 1, generator=rng)), HERE / "samples.png")

    export(gen, torch.randn(2, LATENT_DIM, 1, 1), HERE / "generator.onnx", "z", "image")
    export(disc, torch.zeros(2, 1, 8, 8), HERE / "discriminator.onnx", "image", "score")
    check(gen, HERE / "generator.onnx", "z", (LATENT_DIM, 1, 1), rng)
    check(disc, HERE / "discriminator.onnx", "image", (1, 8, 8), rng)


if __name__ == "__main__":
    main()
