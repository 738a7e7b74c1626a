"""Train a small Keras DCGAN on scikit-learn's 8x8 digits and export it with tf2onnx.

Run from the repository root::

    python examples/keras_dcgan/train.py

The networks are the Keras DCGAN tutorial's, scaled to 8x8 images: a generator of Dense ->
BatchNormalization -> LeakyReLU -> Reshape to (H, W, C) -> Conv2DTranspose (``padding="same"``)
blocks -> tanh, and a discriminator of Conv2D -> LeakyReLU -> Dropout blocks -> Flatten ->
Dense -> sigmoid, both channels-last as Keras builds them. tf2onnx exports them with the
Transposes that take TensorFlow's NHWC layout to ONNX's NCHW and back, which flexigan removes
at import. The script writes ``generator.onnx``, ``discriminator.onnx`` and ``samples.png``
next to itself (or where ``--out`` says), checks the models with ``onnx.checker`` and against
Keras with onnxruntime.
TensorFlow and tf2onnx are only development tools used to make these example models;
flexigan never imports them.

Other widths, depths, image channels and seeds make other models of the same form
(``--widths``, ``--channels``, ``--seed``), and ``--upsample`` the generator's other common form
(UpSampling2D + Conv2D): tests/models holds one the example never saw.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from tensorflow import keras  # noqa: E402

HERE = Path(__file__).resolve().parent
OPSET = 17
BATCH_SIZE = 64
LEARNING_RATE = 2e-4
BETA_1 = 0.5
TOLERANCE = 1e-4
SIZE = 8


def make_generator(latent, widths, channels, upsample=False):
    """The generator: a latent ``(N, latent)`` to an image ``(N, 8, 8, channels)`` in
    ``[-1, 1]``. ``widths`` are the channels of the Dense's image and of each Conv2DTranspose
    but the last; each stride-2 Conv2DTranspose doubles the size (the first image is
    ``8 / 2**(len(widths) - 1)`` pixels wide), and a last stride-1 one makes the image. With
    ``upsample``, each doubling is an UpSampling2D and a 3x3 Conv2D instead (the other
    common form)."""
    layers = keras.layers
    side = SIZE // 2 ** (len(widths) - 1)
    model = [keras.Input((latent,)),
             layers.Dense(side * side * widths[0], use_bias=False),
             layers.BatchNormalization(), layers.LeakyReLU(0.2),
             layers.Reshape((side, side, widths[0]))]
    for width in widths[1:]:
        model += [layers.UpSampling2D(),
                  layers.Conv2D(width, 3, padding="same", use_bias=False)] if upsample else \
            [layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False)]
        model += [layers.BatchNormalization(), layers.LeakyReLU(0.2)]
    model.append(layers.Conv2DTranspose(channels, 3, strides=1, padding="same",
                                        activation="tanh"))
    return keras.Sequential(model)


def make_discriminator(widths, channels):
    """The discriminator: an image ``(N, 8, 8, channels)`` to the probability ``(N, 1)`` that
    it is real, through a stride-2 Conv2D of each of ``widths``."""
    layers = keras.layers
    model = [keras.Input((SIZE, SIZE, channels))]
    for width in widths:
        model += [layers.Conv2D(width, 4, strides=2, padding="same"), layers.LeakyReLU(0.2),
                  layers.Dropout(0.3)]
    model += [layers.Flatten(), layers.Dense(1, activation="sigmoid")]
    return keras.Sequential(model)


def load_images(channels, rng):
    """The digits as ``(1797, 8, 8, channels)`` images in ``[-1, 1]``; with several channels,
    each digit is drawn in a random colour."""
    pixels = load_digits().images.astype(np.float32)[..., None] / 16.0     # 0..1
    colour = rng.uniform(0.3, 1.0, (len(pixels), 1, 1, channels)).astype(np.float32)
    return pixels * colour * 2.0 - 1.0


def train(gen, disc, images, latent, epochs, seed):
    """The DCGAN recipe: Adam (2e-4, beta_1 0.5), binary cross-entropy, non-saturating
    generator loss, ``epochs`` passes over ``images``; returns the last losses."""
    bce = keras.losses.BinaryCrossentropy()
    opt_g = keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1)
    opt_d = keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1)

    @tf.function
    def step(real, z):
        with tf.GradientTape() as tape_g, tf.GradientTape() as tape_d:
            fake = gen(z, training=True)
            real_score, fake_score = disc(real, training=True), disc(fake, training=True)
            loss_d = bce(tf.ones_like(real_score), real_score) + \
                bce(tf.zeros_like(fake_score), fake_score)
            loss_g = bce(tf.ones_like(fake_score), fake_score)
        opt_g.apply_gradients(zip(tape_g.gradient(loss_g, gen.trainable_variables),
                                  gen.trainable_variables))
        opt_d.apply_gradients(zip(tape_d.gradient(loss_d, disc.trainable_variables),
                                  disc.trainable_variables))
        return loss_d, loss_g

    data = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=seed) \
        .batch(BATCH_SIZE, drop_remainder=True)
    losses = (float("nan"), float("nan"))
    for epoch in range(1, epochs + 1):
        for real in data:
            z = tf.random.normal((BATCH_SIZE, latent), seed=None)
            losses = tuple(float(v) for v in step(real, z))
        if epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  loss_D {losses[0]:.4f}  loss_G {losses[1]:.4f}")
    return losses


def save_grid(images, path, scale=4):
    """Save 64 ``(8, 8, C)`` images in ``[-1, 1]`` as an 8x8 grid PNG."""
    pixels = ((images + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    pixels = np.pad(pixels, ((0, 0), (1, 1), (1, 1), (0, 0)))
    side, channels = pixels.shape[1], pixels.shape[3]
    grid = pixels.reshape(8, 8, side, side, channels).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(8 * side, 8 * side, channels).repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path)


def export(model, shape, path, input_name, output_name):
    """Export ``model`` in inference mode with tf2onnx, a dynamic batch axis, opset 17.

    tf2onnx's ``from_keras`` does not read Keras 3 models; a ``tf.function`` of the model in
    inference mode converts the same graph. Its output, which tf2onnx names after the
    function's last op, is renamed ``output_name``."""
    spec = (tf.TensorSpec((None, *shape), tf.float32, name=input_name),)
    function = tf.function(lambda x: model(x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [output_name if o == old else o for o in node.output]
    proto.graph.output[0].name = output_name
    onnx.save(proto, path)


def check(model, path, shape, rng):
    """onnx.checker, and onnxruntime against Keras at batch sizes 1 and 5 (max abs difference
    below ``TOLERANCE``)."""
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 5):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        expected = model(x, training=False).numpy()
        (got,) = session.run(None, {name: x})
        diff = float(np.abs(got - expected).max())
        print(f"{path.name}: batch {batch} shape {got.shape} max|diff| {diff:.2e}")
        assert got.shape == expected.shape and diff < TOLERANCE


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--widths", default="32,16", help="generator widths, comma-separated "
                        "(the discriminator's are the reverse)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--upsample", action="store_true",
                        help="UpSampling2D + Conv2D instead of stride-2 Conv2DTranspose")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE,
                        help="folder for generator.onnx and discriminator.onnx")
    parser.add_argument("--prefix", default="", help="prefix of the two file names")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(args.seed)
    gen = make_generator(args.latent, widths, args.channels, args.upsample)
    disc = make_discriminator(widths[::-1], args.channels)
    loss_d, loss_g = train(gen, disc, load_images(args.channels, rng), args.latent,
                           args.epochs, args.seed)
    print(f"final: loss_D {loss_d:.4f}  loss_G {loss_g:.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    g_path = args.out / f"{args.prefix}generator.onnx"
    d_path = args.out / f"{args.prefix}discriminator.onnx"
    z = rng.standard_normal((64, args.latent)).astype(np.float32)
    save_grid(gen(z, training=False).numpy(), args.out / f"{args.prefix}samples.png")
    export(gen, (args.latent,), g_path, "z", "image")
    export(disc, (SIZE, SIZE, args.channels), d_path, "image", "score")
    check(gen, g_path, (args.latent,), rng)
    check(disc, d_path, (SIZE, SIZE, args.channels), rng)


if __name__ == "__main__":
    main()
