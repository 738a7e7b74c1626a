"""The shipped example GANs, end to end through the golden model, against onnxruntime."""

import numpy as np
import pytest

from flexigan import flow
from tests.helpers import EXAMPLES

#: ONNX models the tests use that are not examples (made by the examples' scripts).
MODELS = EXAMPLES.parent / "tests" / "models"

QUIET = dict(log=lambda message: None)


def latents(n, dim, seed=7):
    return np.random.default_rng(seed).standard_normal((n, dim, 1, 1))


def generated_digits(n, seed=7):
    """What the digits discriminator sees in a GAN: the float generator's images."""
    z = latents(n, 16, seed)
    return flow.float_reference(EXAMPLES / "digits/generator.onnx", {"z": z})["image"]


def keras_latents(n, seed=7):
    return np.random.default_rng(seed).standard_normal((n, 16))


def keras_images(n, seed=7):
    """What the Keras discriminator sees in its GAN: the float generator's (N, 8, 8, 1)
    images."""
    return flow.float_reference(EXAMPLES / "keras_dcgan/generator.onnx",
                                {"z": keras_latents(n, seed)})["image"]


def _compiled_and_run(tmp_path, name, inputs, calibration, engine):
    """Example ``name`` compiled (calibrated on ``calibration()`` if given) and run by
    ``engine`` on ``inputs()``: the folder, the inputs and the run's report."""
    out = tmp_path / "out"
    if calibration:
        np.save(tmp_path / "cal.npy", calibration())
    flow.compile_model(EXAMPLES / f"{name}.onnx", out,
                       calibrate=tmp_path / "cal.npy" if calibration else None, rtl=False,
                       **QUIET)
    x = inputs()
    np.save(tmp_path / "x.npy", x)
    return out, x, flow.simulate(out, engine, tmp_path / "x.npy", **QUIET)


@pytest.mark.parametrize("name, inputs, calibration, min_sqnr_db", [
    # generators: the default calibration (standard-normal latents); the bars
    ("digits/generator", lambda: latents(16, 16), None, 30.0),
    ("dcgan64/generator", lambda: latents(8, 100), None, 25.0),
    # a discriminator is calibrated on images like those it judges (other seed than the test's);
    # its sigmoid score uses half of the symmetric int8 range, so ~30 dB is its ceiling
    ("digits/discriminator", lambda: generated_digits(16), lambda: generated_digits(64, 1), 25.0),
    # Keras, exported by tf2onnx: channels-last, its layout Transposes removed at import
    ("keras_dcgan/generator", lambda: keras_latents(16), None, 30.0),
    ("keras_dcgan/discriminator", lambda: keras_images(16), lambda: keras_images(64, 1), 25.0),
])
def test_int8_golden_against_float(tmp_path, name, inputs, calibration, min_sqnr_db):
    out, x, report = _compiled_and_run(tmp_path, name, inputs, calibration, "golden")
    assert report["sqnr_db"] >= min_sqnr_db
    assert np.load(out / "output.npy").shape[0] == len(x)


def test_pix2pix_unet_runs_bit_exact_on_the_instruction_level_simulator(tmp_path):
    # The U-Net's standalone LeakyReLUs (of a skip's source) and ReLUs (of a concatenation)
    # are LUT passes; its Dropouts are gone at inference. Calibrated on uniform [-1, 1] images
    # as pix2pix's normalised inputs are; ~26 dB through eight int8 levels and back (each
    # level's convolution and LUT pass adds its rounding; dcgan64 is at 25).
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cal.npy", rng.uniform(-1, 1, (4, 3, 256, 256)))
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (1, 3, 256, 256)))
    out = tmp_path / "out"
    flow.compile_model(EXAMPLES / "pix2pix/generator.onnx", out, calibrate=tmp_path / "cal.npy",
                       rtl=False, **QUIET)
    report = flow.simulate(out, "isa", tmp_path / "x.npy", **QUIET)
    assert report["bit_exact_vs_golden"]
    assert report["sqnr_db"] >= 25.0


def _isa_report(tmp_path, model, size, calibration=4):
    """Compile ``model`` calibrated on uniform [-1, 1] images (CycleGAN's and pix2pix's input
    range) and run one image on the instruction-level simulator; return its report."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cal.npy", rng.uniform(-1, 1, (calibration, 3, size, size)))
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (1, 3, size, size)))
    out = tmp_path / "out"
    flow.compile_model(model, out, calibrate=tmp_path / "cal.npy", rtl=False, **QUIET)
    return flow.simulate(out, "isa", tmp_path / "x.npy", **QUIET)


@pytest.mark.slow
def test_cyclegan_runs_bit_exact_on_the_instruction_level_simulator(tmp_path):
    # Reflection pads, 23 InstanceNorms (statistics and normalizing passes on the machine),
    # 9 residual blocks, 256 x 256: ~3 min on 2 cores. Its int8 SQNR is ~18 dB: the network
    # amplifies a perturbation of its input by ~9 dB and its ~60 roundings add up
    # (docs/user-guide.md, "Image-to-image GANs").
    report = _isa_report(tmp_path, EXAMPLES / "cyclegan/generator.onnx", 256)
    assert report["bit_exact_vs_golden"]
    assert report["sqnr_db"] >= 15.0


def test_a_cyclegan_the_examples_did_not_see_runs_bit_exact(tmp_path):
    # Exported from PyTorch by examples/cyclegan/make_model.py with another width, block
    # count, size and seed (ngf 8, 3 blocks, 64 x 64).
    report = _isa_report(tmp_path, MODELS / "cyclegan_ngf8_blocks3_64.onnx", 64)
    assert report["bit_exact_vs_golden"]
    assert report["sqnr_db"] >= 20.0


@pytest.mark.parametrize("name, inputs, calibration", [
    ("keras_dcgan/generator", lambda: keras_latents(4), None),
    ("keras_dcgan/discriminator", lambda: keras_images(4), lambda: keras_images(64, 1)),
])
def test_the_keras_example_runs_bit_exact_on_the_instruction_level_simulator(tmp_path, name,
                                                                            inputs, calibration):
    out, x, report = _compiled_and_run(tmp_path, name, inputs, calibration, "isa")
    assert report["bit_exact_vs_golden"]
    # In the ONNX model's own layout: channels last.
    expected = flow.float_reference(EXAMPLES / f"{name}.onnx", {"z" if "gen" in name else
                                                                 "image": x})
    assert np.load(out / "output.npy").shape == next(iter(expected.values())).shape


@pytest.mark.parametrize("name, inputs, output_shape", [
    ("generator", lambda: keras_latents(8), (8, 8, 8, 3)),
    ("discriminator", lambda: np.random.default_rng(7).uniform(-1, 1, (8, 8, 8, 3)), (8, 1)),
])
def test_a_keras_gan_the_example_did_not_see_runs_bit_exact(tmp_path, name, inputs,
                                                            output_shape):
    # Made by examples/keras_dcgan/train.py with other widths and depth (24, 16, 8: from 2 x 2
    # through two doublings, one more than the example's), each doubling an UpSampling2D and a
    # Conv2D (Keras 3's Tile/Reshape/Transpose run, in NHWC after the Dense), RGB images and
    # another seed: the generator's output and the discriminator's input are Transposes
    # between NHWC and NCHW, not Reshapes (examples/README.md).
    out = tmp_path / "out"
    flow.compile_model(MODELS / f"keras_w24_16_8_rgb_{name}.onnx", out, rtl=False, **QUIET)
    np.save(tmp_path / "x.npy", inputs())
    report = flow.simulate(out, "isa", tmp_path / "x.npy", **QUIET)
    assert report["bit_exact_vs_golden"]
    assert report["sqnr_db"] >= 25.0
    assert np.load(out / "output.npy").shape == output_shape
