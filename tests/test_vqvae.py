"""Tests of the iGPT VQ-VAE (issue 7): shapes and sizes against appendix A.2, the EMA codebook and dead-code revival
on constructed cases, a short training run on real photos, save/load, and input validation."""

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images
from transformers import AutoModel

from modeling_igpt.configuration_vqvae import IGPTVQVAEConfig
from modeling_igpt.modeling_vqvae import IGPTVQVAEModel, IGPTVQVAEQuantizer


@pytest.fixture(scope="session")
def tiny_config(tiny_vqvae_config):
    """`tiny_config(**overrides)`: 32x32 images -> 16x16 codes from 64, with the paper's channels (64, 32 in the
    residual branch): conftest's tiny VQ-VAE at a size a CPU trains in seconds."""
    return functools.partial(
        tiny_vqvae_config, image_size=32, latent_size=16, codebook_size=64, hidden_size=64, residual_hidden_size=32
    )


def random_pixels(batch_size, size, channels=3, seed=0):
    return torch.rand(batch_size, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def photo_crops(num_crops, size, columns, seed):
    """Random square crops of the two scikit-learn photos, from a band of `columns` (fractions of the width), resized
    to `size` and scaled to [-1, 1]: (num_crops, 3, size, size)."""
    generator = torch.Generator().manual_seed(seed)
    photos = [torch.tensor(photo).permute(2, 0, 1).float() / 127.5 - 1 for photo in load_sample_images().images]
    crops = []
    for index in range(num_crops):
        photo = photos[index % len(photos)]
        height, width = photo.shape[1:]
        left, right = int(columns[0] * width), int(columns[1] * width)
        side = int(torch.randint(size, min(3 * size, right - left), (1,), generator=generator))
        top = int(torch.randint(0, height - side, (1,), generator=generator))
        start = int(torch.randint(left, right - side + 1, (1,), generator=generator))
        crop = photo[None, :, top : top + side, start : start + side]  # (1, 3, side, side)
        crops.append(F.interpolate(crop, size=(size, size), mode="area")[0])
    return torch.stack(crops)


def conv_parameters(in_channels, out_channels, kernel_size):
    return in_channels * out_channels * kernel_size**2 + out_channels


@pytest.mark.parametrize("image_size, num_blocks", [(96, 1), (192, 2)])
def test_paper_models_shapes_and_parameter_counts(image_size, num_blocks):
    config = IGPTVQVAEConfig(image_size=image_size)
    assert (config.num_blocks, config.codebook_size, config.hidden_size) == (num_blocks, 4096, 64)
    model = IGPTVQVAEModel(config).eval()

    # A.2, counted from the text: per block one 4x4 resampling conv and a residual stack of two
    # (3x3 conv 64 -> 32, 1x1 conv 32 -> 64) layers; the first encoder conv reads and the last decoder conv writes RGB.
    residual_stack = 2 * (conv_parameters(64, 32, 3) + conv_parameters(32, 64, 1))
    encoder = conv_parameters(3, 64, 4) + (num_blocks - 1) * conv_parameters(64, 64, 4) + num_blocks * residual_stack
    decoder = conv_parameters(64, 3, 4) + (num_blocks - 1) * conv_parameters(64, 64, 4) + num_blocks * residual_stack
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder
    assert sum(p.numel() for p in model.decoder.parameters()) == decoder
    assert model.num_parameters() == encoder + decoder < 1_000_000  # section 3.2: "< 1M parameters"
    if image_size == 96:
        assert model.num_parameters() < 200_000  # A.2: "fewer than 200K parameters"
    # A.2: "262K" parameters in the VQ embeddings, held as a buffer that no optimizer sees
    assert model.quantizer.codebook.numel() == 4096 * 64 == 262_144
    assert all(parameter is not model.quantizer.codebook for parameter in model.parameters())

    pixel_values = random_pixels(2, image_size)
    codes = model.encode(pixel_values)
    assert codes.shape == (2, 48 * 48) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 4096
    assert model.decode(codes).shape == (2, 3, image_size, image_size)
    output = model(pixel_values)
    assert output.reconstruction.shape == pixel_values.shape
    assert torch.equal(output.codes, codes)


def test_receptive_field_of_a_code_matches_the_paper():
    # Section 3.2: "the receptive field for a latent code is only ... 34x34 for an IR of 192^2 x 3".
    model = IGPTVQVAEModel(IGPTVQVAEConfig(image_size=192)).double()
    pixel_values = random_pixels(2, 192).double().requires_grad_()
    model.encoder(pixel_values)[:, :, 24, 24].sum().backward()
    rows, columns = pixel_values.grad.abs().sum((0, 1)).nonzero(as_tuple=True)
    assert (rows.max() - rows.min() + 1, columns.max() - columns.min() + 1) == (34, 34)


def test_config_rejects_sizes_that_are_not_a_power_of_two_above_the_latent_grid():
    for image_size in (48, 100, 144):
        with pytest.raises(ValueError, match="power of two"):
            IGPTVQVAEConfig(image_size=image_size)


@pytest.mark.parametrize(
    "overrides, named",
    [({"latent_size": 0}, "latent_size"), ({"codebook_size": 0}, "codebook_size"), ({"hidden_size": -4}, "hidden_size"),
     ({"num_residual_layers": -1}, "num_residual_layers"), ({"commitment_cost": float("nan")}, "commitment_cost")],
)  # fmt: skip
def test_config_refuses_non_positive_sizes_by_name(overrides, named):
    with pytest.raises(ValueError, match=f"Invalid IGPTVQVAEConfig: {named}"):  # latent_size=0 was a ZeroDivisionError
        IGPTVQVAEConfig(**overrides)


def test_ema_moves_used_codes_to_the_mean_of_their_data_and_eval_leaves_them_alone(tiny_config):
    config = tiny_config(codebook_size=4, hidden_size=2, ema_decay=0.9, dead_code_threshold=0.0)
    quantizer = IGPTVQVAEQuantizer(config).train()
    initial = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    quantizer.codebook.copy_(initial)
    quantizer.ema_cluster_size.fill_(1.0)
    quantizer.ema_embed_sum.copy_(initial)

    generator = torch.Generator().manual_seed(0)
    data = torch.cat(
        [
            torch.tensor([0.5, -0.5]) + 0.1 * torch.randn(300, 2, generator=generator),  # nearest to code 0
            torch.tensor([3.0, 0.5]) + 0.1 * torch.randn(100, 2, generator=generator),  # nearest to code 1
        ]
    )
    nearest = torch.cdist(data, initial).argmin(1)
    counts = torch.bincount(nearest, minlength=4).float()
    codes, quantized, _ = quantizer(data)
    assert torch.equal(codes, nearest) and torch.equal(quantized, initial[nearest])
    # one step of N <- decay * N + (1 - decay) * n
    torch.testing.assert_close(quantizer.ema_cluster_size, 0.9 * torch.ones(4) + 0.1 * counts)

    for _ in range(40):
        quantizer(data)
    torch.testing.assert_close(quantizer.codebook[0], data[:300].mean(0), atol=1e-3, rtol=0)
    torch.testing.assert_close(quantizer.codebook[1], data[300:].mean(0), atol=1e-3, rtol=0)
    # no data, no move (up to the Laplace smoothing, which matters once N is near epsilon)
    torch.testing.assert_close(quantizer.codebook[2:], initial[2:], atol=1e-2, rtol=0)

    buffers = {name: buffer.clone() for name, buffer in quantizer.named_buffers()}
    quantizer.eval()(data + 1.0)
    for name, buffer in quantizer.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_codes_below_ten_percent_of_expected_usage_are_revived_next_to_a_live_code(tiny_config):
    # decay 0: the EMA usage is this batch's usage. 400 tokens over 4 codes: expected usage 100, threshold 10.
    config = tiny_config(codebook_size=4, hidden_size=2, ema_decay=0.0)
    quantizer = IGPTVQVAEQuantizer(config).train()
    initial = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    quantizer.codebook.copy_(initial)
    quantizer.ema_cluster_size.fill_(1.0)
    quantizer.ema_embed_sum.copy_(initial)
    torch.manual_seed(0)
    usage = [280, 100, 15, 5]  # code 2 at 15% of expected usage lives, code 3 at 5% dies
    data = torch.cat([code + 0.5 * torch.randn(count, 2) for code, count in zip(initial, usage)])

    _, _, dead_codes = quantizer(data)

    assert int(dead_codes) == 1
    live = quantizer.codebook[:3]
    for code, count in zip(range(3), usage):
        start = sum(usage[:code])
        torch.testing.assert_close(live[code], data[start : start + count].mean(0))
    revived = quantizer.codebook[3]
    assert torch.cdist(revived[None], initial[3:])[0, 0] > 5  # it left its dead spot ...
    assert torch.cdist(revived[None], live).min() < 0.5  # ... for the neighbourhood of a live code
    assert quantizer.ema_cluster_size[3] == pytest.approx(0.1 * 100)  # on probation at the threshold
    assert int(quantizer.dead_code_mask(100.0).sum()) == 0


def test_straight_through_gradients_reach_the_encoder_and_losses_are_rescaled_to_unit_variance(tiny_config):
    model = IGPTVQVAEModel(tiny_config()).train()
    pixel_values = random_pixels(4, 32)
    latents = model.encoder(pixel_values).detach()  # (B, D, h, w) before the step updates the codebook
    codebook = model.quantizer.codebook.clone()
    output = model(pixel_values)

    quantized = codebook[output.codes].view(4, 16, 16, 64).permute(0, 3, 1, 2)  # (B, D, h, w)
    recon_loss = F.mse_loss(output.reconstruction, pixel_values) / pixel_values.var()
    commitment_loss = F.mse_loss(latents, quantized) / latents.var()
    torch.testing.assert_close(output.recon_loss, recon_loss)
    torch.testing.assert_close(output.commitment_loss, commitment_loss)
    torch.testing.assert_close(output.loss, recon_loss + 0.02 * commitment_loss)

    output.loss.backward()
    assert model.encoder.blocks[0].downsample.weight.grad.abs().sum() > 0
    assert model.decoder.blocks[-1].upsample.weight.grad.abs().sum() > 0


def test_decode_of_encode_is_the_forward_reconstruction(tiny_config):
    model = IGPTVQVAEModel(tiny_config()).eval()
    pixel_values = random_pixels(3, 32)
    output = model(pixel_values)
    torch.testing.assert_close(model.decode(model.encode(pixel_values)), output.reconstruction.clamp(-1, 1))
    torch.testing.assert_close(model.decode(output.codes.view(3, 16, 16)), output.reconstruction.clamp(-1, 1))


def train(model, images, steps, batch_size=16, learning_rate=1e-3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(steps):
        batch = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def validation_mse_and_codes_used(model, images):
    with torch.no_grad():
        output = model.eval()(images)
    return F.mse_loss(output.reconstruction, images).item(), output.codes.unique().numel()


@pytest.fixture
def one_thread():
    # On a shared 2-core machine, two OpenMP threads competing with other processes run ~10x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_short_training_on_photos_lowers_reconstruction_error_and_revival_keeps_codes_alive(one_thread, tiny_config):
    # Train on crops from the left three quarters of each photo, validate on the right quarter. The learning rate is
    # 10x the paper's so that 150 steps are enough.
    train_images = photo_crops(512, 32, columns=(0.0, 0.75), seed=0)
    validation_images = photo_crops(64, 32, columns=(0.75, 1.0), seed=1)
    torch.manual_seed(0)
    model = IGPTVQVAEModel(tiny_config())
    initial_mse, _ = validation_mse_and_codes_used(model, validation_images)

    train(model, train_images, steps=150)
    mse, codes_used = validation_mse_and_codes_used(model, validation_images)
    assert mse < 0.1 * initial_mse
    assert codes_used >= 64 // 2  # on held-out crops, most codes are still in use
    assert int(model.quantizer.dead_code_mask(16 * 16 * 16 / 64).sum()) <= 64 // 10

    torch.manual_seed(0)
    without_revival = train(IGPTVQVAEModel(tiny_config(dead_code_threshold=0.0)), train_images, steps=150)
    mse_without, codes_used_without = validation_mse_and_codes_used(without_revival, validation_images)
    assert codes_used > 2 * codes_used_without and mse < mse_without


def test_save_and_load_round_trip(tmp_path, tiny_config):
    model = IGPTVQVAEModel(tiny_config())
    model.train()(random_pixels(4, 32))  # move the EMA buffers away from their initial values
    model.eval().save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "igpt_vqvae"
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_vqvae.IGPTVQVAEConfig",
        "AutoModel": "modeling_vqvae.IGPTVQVAEModel",
    }
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "modeling_vqvae.py").exists()

    pixel_values = random_pixels(2, 32, seed=1)
    remote = AutoModel.from_pretrained(tmp_path, trust_remote_code=True)  # the Hub path: the files saved with it
    for loaded in (IGPTVQVAEModel.from_pretrained(tmp_path), remote):
        state = loaded.state_dict()
        assert state.keys() == model.state_dict().keys()
        for name, tensor in model.state_dict().items():
            assert torch.equal(state[name], tensor), name
        assert torch.equal(loaded.encode(pixel_values), model.encode(pixel_values))

    # a bfloat16 copy still tokenizes (distances in float32) and decodes
    half = IGPTVQVAEModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    codes = half.encode(pixel_values.bfloat16())
    assert codes.shape == (2, 16 * 16) and 0 <= codes.min() and codes.max() < 64
    assert half.decode(codes).dtype == torch.bfloat16


def test_bad_inputs_raise_clear_errors():
    model = IGPTVQVAEModel(IGPTVQVAEConfig(image_size=192, codebook_size=64)).eval()
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 4"):
        model.encode(random_pixels(1, 190))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        model(random_pixels(1, 192, channels=4))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        model.encode(random_pixels(1, 192)[0])
    valid = torch.zeros(1, 48 * 48, dtype=torch.long)
    for codes in (valid + 64, valid - 1, valid.float()):
        with pytest.raises(ValueError, match=r"integers in \[0, 64\)"):
            model.decode(codes)
    with pytest.raises(ValueError, match="codes must have shape"):
        model.decode(valid[:, :100])
