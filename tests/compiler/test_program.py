"""The compiled program's memory image: where the code, the regions and the tensors lie, how a
sample goes in and the outputs come out, and the folder it is saved to."""

import numpy as np
import pytest

from flexigan.compiler.grid import Grid
from flexigan.compiler.lower import lower
from flexigan.compiler.plan import ALIGN
from flexigan.compiler.program import Program, load_program, tensor_addresses
from flexigan.errors import UsageError
from flexigan.hw.arch import isa
from tests.helpers import SIM, convt_model, quantized, tiny_generator


@pytest.fixture(scope="module")
def compiled():
    qgraph, inputs = quantized(tiny_generator())
    return lower(qgraph, SIM), inputs


def _entry(addr, shape, grid):
    return {"addr": addr, "shape": list(shape), "scale": 1.0, "grid": grid.to_dict()}


def test_the_global_program_starts_at_address_0(compiled):
    program, _ = compiled
    count = program.layout["code"]
    assert program.code == program.image[:count * isa.GLOBAL_BYTES]
    first = isa.decode_global(int.from_bytes(program.code[:isa.GLOBAL_BYTES], "little"))[0]
    last = isa.decode_global(int.from_bytes(program.code[-isa.GLOBAL_BYTES:], "little"))[0]
    assert (first, last) == (isa.GlobalOp.COUNTERS, isa.GlobalOp.END)
    assert program.layout["regions"]["code"] == [0, count * isa.GLOBAL_BYTES]


def test_regions_follow_the_code_aligned_and_apart(compiled):
    program, _ = compiled
    spans = sorted(program.layout["regions"].values())
    assert spans[0][0] == 0
    for (start, size), (following, _) in zip(spans, spans[1:]):
        assert following % ALIGN == 0 and start + size <= following
    assert spans[-1][0] + spans[-1][1] <= len(program.image)


def test_tensors_lie_aligned_inside_their_regions(compiled):
    program, _ = compiled
    for kind in ("inputs", "outputs"):
        start, size = program.layout["regions"][kind]
        for entry in program.layout[kind].values():
            addresses = tensor_addresses(entry)
            assert entry["addr"] % ALIGN == 0
            assert addresses.shape == tuple(entry["shape"])
            assert np.unique(addresses).size == addresses.size
            assert start <= addresses.min() and addresses.max() < start + size


def test_tensor_addresses_of_a_padded_zero_inserted_grid():
    # 2 channels of 2x2 pixels in a 5x5 array, one zero row and column around and between.
    grid = Grid(2, 2, 2, rows=5, cols=5, off_h=1, off_w=1, step_h=2, step_w=2)
    addresses = tensor_addresses(_entry(1000, (2, 2, 2), grid))
    # (c, h, w) -> 1000 + ((1 + 2h)*5 + 1 + 2w)*2 + c
    np.testing.assert_array_equal(addresses, [[[1012, 1016], [1032, 1036]],
                                              [[1013, 1017], [1033, 1037]]])
    np.testing.assert_array_equal(addresses - 1000, grid.addresses())


def test_frame_places_one_sample_and_outputs_reads_it_back():
    grid = Grid.dense((3, 2, 2))
    layout = {"inputs": {"x": _entry(64, (3, 2, 2), grid)},
              "outputs": {"y": _entry(128, (12,), grid)}}
    image = bytes(range(256))
    program = Program(SIM, image, layout)
    samples = np.arange(-12, 12, dtype=np.int8).reshape(2, 3, 2, 2)
    frame = program.frame({"x": samples}, n=1)
    assert len(frame) == len(image)
    placed = tensor_addresses(layout["inputs"]["x"])
    np.testing.assert_array_equal(np.frombuffer(frame, np.int8)[placed], samples[1])
    untouched = np.setdiff1d(np.arange(len(image)), placed.ravel())
    assert all(frame[i] == image[i] for i in untouched)
    memory = bytearray(image)
    memory[128:140] = samples[0].transpose(1, 2, 0).tobytes()   # HWC: channel fastest
    np.testing.assert_array_equal(program.outputs(memory)["y"], samples[0].ravel())


def test_a_conventional_program_lays_its_input_out_zero_inserted():
    qgraph, inputs = quantized(convt_model(2, 3, (3, 3), [3, 3], strides=[2, 2]))
    program = lower(qgraph, SIM, reorder=False)
    entry = program.layout["inputs"]["x"]
    assert Grid.from_dict(entry["grid"]).gapped
    frame = np.frombuffer(program.frame(inputs, 0), np.int8)
    start, size = program.layout["regions"]["inputs"]
    region = frame[start:start + size]
    assert np.count_nonzero(region) == np.count_nonzero(inputs["x"][0])
    np.testing.assert_array_equal(frame[tensor_addresses(entry)], inputs["x"][0])


def test_save_and_load_round_trip(compiled, tmp_path):
    program, _ = compiled
    program.save(tmp_path / "out")
    loaded = load_program(tmp_path / "out")
    assert loaded.config == program.config
    assert loaded.image == program.image and loaded.layout == program.layout
    assert (tmp_path / "out" / "program.bin").read_bytes() == program.code
    assert (tmp_path / "out" / "memory.bin").read_bytes() == program.image
    listing = (tmp_path / "out" / "program.s").read_text()
    assert listing.count("# micro-program at ") == len(program.layout["uop_programs"])
    assert listing.count("# layer ") == len(program.layout["layers"])


def test_a_batched_frame_places_each_sample_in_its_frame_and_reads_each_back():
    grid = Grid.dense((3, 2, 2))
    layout = {"batch": 2,
              "inputs": {"x": {**_entry(64, (3, 2, 2), grid), "frame_bytes": 64}},
              "outputs": {"y": {**_entry(192, (12,), grid), "frame_bytes": 64}}}
    program = Program(SIM, bytes(320), layout)
    samples = np.arange(-48, 48, dtype=np.int8).reshape(8, 3, 2, 2)
    assert program.runs(8) == 4
    frame = np.frombuffer(program.frame({"x": samples}, n=1), np.int8)
    for f in range(2):      # run 1 holds samples 2 and 3, frame_bytes apart
        placed = tensor_addresses(layout["inputs"]["x"], f)
        np.testing.assert_array_equal(frame[placed], samples[2 + f])
        memory = bytearray(320)
        memory[192 + 64 * f:204 + 64 * f] = samples[f].transpose(1, 2, 0).tobytes()
        np.testing.assert_array_equal(program.outputs(memory, f)["y"], samples[f].ravel())


def test_a_sample_count_not_a_multiple_of_the_batch_is_refused():
    program = Program(SIM, b"", {"batch": 4})
    with pytest.raises(UsageError, match="runs 4 frames at once .* multiple of 4 samples, "
                                         "not 6"):
        program.runs(6)
