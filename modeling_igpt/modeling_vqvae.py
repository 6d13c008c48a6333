"""The iGPT VQ-VAE (Chen et al., 2020, section 3.2 and appendix A.2).

A tiny convolutional VQ-VAE that turns 96x96x3 (one block) or 192x192x3 (two blocks) images into a 48x48 grid of
codes from a vocabulary of 4,096, the 2,304-token sequences the ImageNet iGPT models are trained on.

    pixel_values (B, 3, H, W) in [-1, 1]
      -> encoder: [4x4 stride-2 conv, ReLU, residual stack] x num_blocks       -> latents (B, 64, H/f, W/f)
      -> quantizer: nearest of 4,096 codes, codebook updated by EMA, dead codes revived
      -> decoder: [residual stack, ReLU, 4x4 stride-2 transposed conv] x num_blocks -> reconstruction

Loss: L2 reconstruction + beta * commitment, each rescaled to unit variance, beta = 0.02 (A.2). The codebook is
a buffer, not a parameter: only the moving averages move it, never the optimizer.

Hub-shipped: imports only torch, transformers and its sibling configuration file.
"""

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_vqvae import IGPTVQVAEConfig


@dataclass
class IGPTVQVAEOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `recon_loss + commitment_cost * commitment_loss`, the quantity trained on.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Decoder output (not clamped).
        codes (`torch.LongTensor` of shape `(batch_size, latent_height * latent_width)`):
            Code indices in raster order, the prior's input sequence.
        recon_loss (`torch.FloatTensor` of shape `()`):
            Mean squared reconstruction error divided by the variance of `pixel_values`.
        commitment_loss (`torch.FloatTensor` of shape `()`):
            Mean squared distance of the encoder outputs to their codes, divided by the variance of the encoder outputs.
        perplexity (`torch.FloatTensor` of shape `()`):
            exp(entropy) of the batch's code histogram: the number of equally used codes it is worth.
        dead_codes (`torch.LongTensor` of shape `()`, *optional*):
            Training only: codes whose EMA usage was below the threshold at this step (and were revived).
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    recon_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    dead_codes: torch.LongTensor | None = None


def _all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` in place over data-parallel workers, so every replica sees the global batch statistics."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class IGPTVQVAEQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer with an EMA codebook and dead-code revival.

    EMA update (van den Oord et al., 2017, appendix A.1), with n_i the number of vectors assigned to code i in the
    batch and s_i their sum:

        N_i <- decay * N_i + (1 - decay) * n_i        (ema_cluster_size)
        m_i <- decay * m_i + (1 - decay) * s_i        (ema_embed_sum)
        e_i <- m_i / N_i'                             (codebook; N' = Laplace-smoothed N)

    The statistics start as if every code had been chosen once at its initial value (N = 1, m = e), so a code that
    no data reaches keeps its value while its usage decays (until N nears epsilon, when the smoothing pulls it to
    zero; revival moves it long before).

    Revival (Chen et al., 2020, A.2): a code whose EMA usage N_i falls below `dead_code_threshold` x the expected
    usage (tokens per batch / codebook size) is dead. It is moved next to a live code, drawn in proportion to usage
    so that busy codes are split first, plus a little noise, and given the threshold usage: it survives the next step
    only if it wins at least the threshold share of the data, and is otherwise moved again.
    """

    def __init__(self, config: IGPTVQVAEConfig):
        super().__init__()
        self.codebook_size = config.codebook_size
        self.decay = config.ema_decay
        self.epsilon = config.ema_epsilon
        self.dead_code_threshold = config.dead_code_threshold
        self.dead_code_noise = config.dead_code_noise
        self.register_buffer("codebook", torch.empty(config.codebook_size, config.hidden_size))  # (K, D)
        self.register_buffer("ema_cluster_size", torch.empty(config.codebook_size))  # (K,)
        self.register_buffer("ema_embed_sum", torch.empty(config.codebook_size, config.hidden_size))  # (K, D)

    @torch.no_grad()
    def quantize(self, latents: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
        """Index of the nearest code for each row of `latents` (N, D) -> (N,).

        Chunked so that the (tokens, codes) distance matrix stays about 1 GB at the paper's 4,096 codes."""
        codebook = self.codebook.float()
        codebook_sq = codebook.pow(2).sum(1)  # (K,)
        codes = []
        for chunk in latents.float().split(chunk_size):
            # ||z - e||^2 without the ||z||^2 term, which does not change the argmin
            distances = codebook_sq - 2 * chunk @ codebook.t()  # (n, K)
            codes.append(distances.argmin(1))
        return torch.cat(codes)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """latents (N, D) -> codes (N,), quantized (N, D) from the codebook before this step's update, dead count."""
        codes = self.quantize(latents)
        quantized = F.embedding(codes, self.codebook).to(latents.dtype)  # (N, D), a copy: safe from the update
        dead_codes = self.update(latents.detach().to(self.codebook.dtype), codes) if self.training else None
        return codes, quantized, dead_codes

    @torch.no_grad()
    def update(self, latents: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """One EMA step on the batch `latents` (N, D) assigned to `codes` (N,), then revival. Returns the dead count."""
        counts = torch.bincount(codes, minlength=self.codebook_size).to(latents.dtype)  # (K,) n_i
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, codes, latents)  # (K, D) s_i
        num_tokens = torch.tensor(float(codes.numel()), device=codes.device)  # float32 even if the buffers are not
        for statistic in (counts, sums, num_tokens):
            _all_reduce_sum_(statistic)

        self.ema_cluster_size.lerp_(counts, 1 - self.decay)
        self.ema_embed_sum.lerp_(sums, 1 - self.decay)
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.codebook.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))

        expected_usage = num_tokens / self.codebook_size
        dead = self.dead_code_mask(expected_usage)
        if dead.any() and not dead.all():
            self.revive(dead, latents, expected_usage)
        return dead.sum()

    def dead_code_mask(self, expected_usage: torch.Tensor | float) -> torch.Tensor:
        """(K,) bool: EMA usage below `dead_code_threshold` x `expected_usage` (tokens per batch / codebook size)."""
        return self.ema_cluster_size < self.dead_code_threshold * expected_usage

    @torch.no_grad()
    def revive(self, dead: torch.Tensor, latents: torch.Tensor, expected_usage: torch.Tensor) -> None:
        """Move the `dead` (K,) codes next to live ones drawn in proportion to their usage."""
        live = (~dead).nonzero().squeeze(1)  # (L,)
        num_dead = int(dead.sum())
        usage = self.ema_cluster_size[live].float()  # (L,)
        donors = live[torch.multinomial(usage, num_dead, replacement=True)]  # (num_dead,)
        noise = torch.randn(num_dead, latents.shape[1], device=latents.device) * latents.std(0)  # (num_dead, D)
        self.codebook[dead] = self.codebook[donors] + self.dead_code_noise * noise
        revived_usage = self.dead_code_threshold * expected_usage
        self.ema_cluster_size[dead] = revived_usage
        self.ema_embed_sum[dead] = self.codebook[dead] * revived_usage
        if dist.is_available() and dist.is_initialized():  # replicas drew different donors: keep rank 0's
            for buffer in (self.codebook, self.ema_cluster_size, self.ema_embed_sum):
                dist.broadcast(buffer, src=0)


class IGPTVQVAEResidualLayer(nn.Module):
    """x + conv1x1(ReLU(conv3x3(ReLU(x)))), the residual layer of van den Oord et al. (2017) with a narrow branch."""

    def __init__(self, config: IGPTVQVAEConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(config.hidden_size, config.residual_hidden_size, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(config.residual_hidden_size, config.hidden_size, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.conv2(F.relu(self.conv1(F.relu(hidden_states))))


class IGPTVQVAEResidualStack(nn.Module):
    def __init__(self, config: IGPTVQVAEConfig):
        super().__init__()
        self.layers = nn.ModuleList(IGPTVQVAEResidualLayer(config) for _ in range(config.num_residual_layers))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class IGPTVQVAEEncoderBlock(nn.Module):
    """Downsampling convolution (4x4, stride 2), ReLU, residual network (A.2): (B, C, H, W) -> (B, 64, H/2, W/2)."""

    def __init__(self, config: IGPTVQVAEConfig, in_channels: int):
        super().__init__()
        self.downsample = nn.Conv2d(in_channels, config.hidden_size, kernel_size=4, stride=2, padding=1)
        self.residual = IGPTVQVAEResidualStack(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.residual(F.relu(self.downsample(hidden_states)))


class IGPTVQVAEDecoderBlock(nn.Module):
    """Residual network, ReLU, upsampling transposed convolution (4x4, stride 2): (B, 64, h, w) -> (B, C, 2h, 2w)."""

    def __init__(self, config: IGPTVQVAEConfig, out_channels: int):
        super().__init__()
        self.residual = IGPTVQVAEResidualStack(config)
        self.upsample = nn.ConvTranspose2d(config.hidden_size, out_channels, kernel_size=4, stride=2, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.upsample(F.relu(self.residual(hidden_states)))


class IGPTVQVAEEncoder(nn.Module):
    def __init__(self, config: IGPTVQVAEConfig):
        super().__init__()
        channels = [config.num_channels] + [config.hidden_size] * (config.num_blocks - 1)
        self.blocks = nn.Sequential(*(IGPTVQVAEEncoderBlock(config, in_channels) for in_channels in channels))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.blocks(pixel_values)  # (B, 3, IR, IR) -> (B, C, MR, MR)


class IGPTVQVAEDecoder(nn.Module):
    def __init__(self, config: IGPTVQVAEConfig):
        super().__init__()
        channels = [config.hidden_size] * (config.num_blocks - 1) + [config.num_channels]
        self.blocks = nn.Sequential(*(IGPTVQVAEDecoderBlock(config, out_channels) for out_channels in channels))

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.blocks(quantized)  # (B, C, MR, MR) -> (B, 3, IR, IR)


class IGPTVQVAEPreTrainedModel(PreTrainedModel):
    config: IGPTVQVAEConfig
    config_class = IGPTVQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # PyTorch's default convolution init, as in the reference VQ-VAE implementations
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            # fan-in as PyTorch counts it for both kinds: weight dim 1 times the kernel size, i.e. one slice of dim 0
            fan_in = module.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, IGPTVQVAEQuantizer):
            init.normal_(module.codebook)
            init.ones_(module.ema_cluster_size)
            init.copy_(module.ema_embed_sum, module.codebook)


class IGPTVQVAEModel(IGPTVQVAEPreTrainedModel):
    """The VQ-VAE of iGPT: `encode` images to code sequences for the prior, `decode` code sequences to images."""

    def __init__(self, config: IGPTVQVAEConfig):
        super().__init__(config)
        self.encoder = IGPTVQVAEEncoder(config)
        self.quantizer = IGPTVQVAEQuantizer(config)
        self.decoder = IGPTVQVAEDecoder(config)
        self.post_init()

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        # Any size divisible by the downsampling factor is accepted (the network is fully convolutional);
        # `config.image_size` is only the size the paper's model was trained at.
        factor, channels = self.config.downsampling_factor, self.config.num_channels
        if pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {channels}, height, width), got {tuple(pixel_values.shape)}."
            )
        height, width = pixel_values.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the downsampling factor {factor} "
                f"({self.config.num_blocks} stride-2 block(s)); this model expects e.g. "
                f"{self.config.image_size}x{self.config.image_size}."
            )

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """pixel_values (B, C, H, W) in [-1, 1] -> codes (B, H/f * W/f) in raster order, e.g. (B, 2304)."""
        self._check_pixel_values(pixel_values)
        latents = self.encoder(pixel_values)  # (B, D, h, w)
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (B*h*w, D), raster order
        return self.quantizer.quantize(flat).view(latents.shape[0], -1)  # (B, h*w)

    @torch.no_grad()
    def decode(self, codes: torch.LongTensor) -> torch.FloatTensor:
        """codes (B, h*w) on the square `latent_size` grid, or (B, h, w) -> pixel_values (B, C, H, W) in [-1, 1]."""
        side = self.config.latent_size
        if codes.ndim == 2 and codes.shape[1] == side * side:
            codes = codes.view(-1, side, side)  # (B, h, w)
        if codes.ndim != 3:
            raise ValueError(
                f"codes must have shape (batch, {side * side}) or (batch, height, width), got {tuple(codes.shape)}."
            )
        if codes.dtype.is_floating_point or codes.min() < 0 or codes.max() >= self.config.codebook_size:
            raise ValueError(f"codes must be integers in [0, {self.config.codebook_size}).")
        quantized = F.embedding(codes, self.quantizer.codebook).permute(0, 3, 1, 2)  # (B, D, h, w)
        return self.decoder(quantized.to(self.dtype)).clamp(-1, 1)

    def forward(self, pixel_values: torch.Tensor) -> IGPTVQVAEOutput:
        self._check_pixel_values(pixel_values)
        latents = self.encoder(pixel_values)  # (B, D, h, w)
        batch_size, dim, height, width = latents.shape
        flat = latents.permute(0, 2, 3, 1).reshape(-1, dim)  # (B*h*w, D), raster order
        codes, quantized, dead_codes = self.quantizer(flat)  # (B*h*w,), (B*h*w, D)
        quantized = quantized.view(batch_size, height, width, dim).permute(0, 3, 1, 2)  # (B, D, h, w)
        # straight-through estimator: the decoder's gradient w.r.t. the codes is copied onto the encoder output
        reconstruction = self.decoder(latents + (quantized - latents).detach())

        # "After rescaling reconstruction and commitment losses to unit variance" (A.2), read as: each mean squared
        # error is divided by the variance of its target's scale, the pixels for the reconstruction and the encoder
        # outputs for the commitment, so that a loss of 1 means "no better than predicting the mean" for both and
        # beta = 0.02 does not depend on the scale of either. Batch statistics, no gradient.
        data_variance = pixel_values.detach().float().var().clamp_min(1e-6)
        latent_variance = latents.detach().float().var().clamp_min(1e-6)
        recon_loss = F.mse_loss(reconstruction.float(), pixel_values.float()) / data_variance
        commitment_loss = F.mse_loss(latents.float(), quantized.float()) / latent_variance
        loss = recon_loss + self.config.commitment_cost * commitment_loss

        usage = torch.bincount(codes, minlength=self.config.codebook_size).float()  # (K,)
        probs = usage / usage.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())

        return IGPTVQVAEOutput(
            loss=loss,
            reconstruction=reconstruction,
            codes=codes.view(batch_size, height * width),
            recon_loss=recon_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            dead_codes=dead_codes,
        )


IGPTVQVAEModel.register_for_auto_class("AutoModel")

__all__ = ["IGPTVQVAEModel", "IGPTVQVAEOutput", "IGPTVQVAEPreTrainedModel", "IGPTVQVAEQuantizer"]
