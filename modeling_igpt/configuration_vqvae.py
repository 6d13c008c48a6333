"""Configuration of the iGPT VQ-VAE (Chen et al., 2020, section 3.2 and appendix A.2).

The paper compresses 96x96x3 or 192x192x3 images to a 48x48 grid of codes from a vocabulary of
4,096, so that the sequence Transformer keeps a model resolution of 48^2. `IGPTVQVAEConfig(image_size=96)`
or `IGPTVQVAEConfig(image_size=192)` is the paper's autoencoder with no other argument.

Hub-shipped: imports only transformers.
"""

import math

from transformers import PreTrainedConfig


class IGPTVQVAEConfig(PreTrainedConfig):
    r"""
    Args:
        image_size (`int`, defaults to 96):
            Input resolution (IR) side. Must be `latent_size` times a power of two: each factor of two is one
            encoder block (and one mirrored decoder block), so 96 -> 48 uses one block and 192 -> 48 two.
        latent_size (`int`, defaults to 48):
            Side of the code grid (the model resolution, MR, of the prior). `image_size // latent_size` is the
            downsampling factor; inputs of any size divisible by it are accepted.
        num_channels (`int`, defaults to 3):
            Image channels.
        hidden_size (`int`, defaults to 64):
            Channels of the resampling convolutions and dimension of each codebook vector (A.2: "64 channels").
        residual_hidden_size (`int`, defaults to 32):
            Hidden units in the branch of each residual layer (A.2: "32 hidden units in the residual branch").
        num_residual_layers (`int`, defaults to 2):
            Residual layers per residual stack, as in van den Oord et al. (2017). With two, a code of the 192 model
            sees 34x34 input pixels, the receptive field quoted in section 3.2.
        codebook_size (`int`, defaults to 4096):
            Number of codes (the prior's vocabulary, without its start token).
        commitment_cost (`float`, defaults to 0.02):
            beta, the weight of the commitment loss after both losses are rescaled to unit variance (A.2).
        ema_decay (`float`, defaults to 0.99):
            Decay of the exponential moving averages that update the codebook (van den Oord et al., 2017, A.1).
        ema_epsilon (`float`, defaults to 1e-5):
            Laplace smoothing of the EMA cluster sizes, so that no code divides by zero.
        dead_code_threshold (`float`, defaults to 0.1):
            A code is dead when its EMA usage falls below this fraction of the expected usage
            (tokens per batch / codebook_size); 0 disables revival.
        dead_code_noise (`float`, defaults to 0.01):
            A revived code is a live code plus Gaussian noise of this many standard deviations of the batch's
            encoder outputs.
    """

    model_type = "igpt_vqvae"

    def __init__(
        self,
        image_size: int = 96,
        latent_size: int = 48,
        num_channels: int = 3,
        hidden_size: int = 64,
        residual_hidden_size: int = 32,
        num_residual_layers: int = 2,
        codebook_size: int = 4096,
        commitment_cost: float = 0.02,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        dead_code_threshold: float = 0.1,
        dead_code_noise: float = 0.01,
        **kwargs,
    ):
        positive = ("image_size", "latent_size", "num_channels", "hidden_size", "residual_hidden_size", "codebook_size")
        values = dict(zip(positive, (image_size, latent_size, num_channels, hidden_size, residual_hidden_size, codebook_size)))
        problems = [f"{name} must be a positive integer, got {value!r}" for name, value in values.items()
                    if not isinstance(value, int) or value < 1]  # fmt: skip
        if not isinstance(num_residual_layers, int) or num_residual_layers < 0:
            problems.append(f"num_residual_layers must be an integer >= 0, got {num_residual_layers!r}")
        for name, value in (("commitment_cost", commitment_cost), ("ema_epsilon", ema_epsilon),
                            ("dead_code_threshold", dead_code_threshold), ("dead_code_noise", dead_code_noise)):  # fmt: skip
            if not value >= 0:  # also refuses NaN
                problems.append(f"{name} must be >= 0, got {value!r}")
        if problems:
            raise ValueError("Invalid IGPTVQVAEConfig: " + "; ".join(problems))
        factor = image_size // latent_size
        if image_size % latent_size or factor < 2 or factor & (factor - 1):
            raise ValueError(
                f"image_size ({image_size}) must be latent_size ({latent_size}) times a power of two >= 2 "
                "(each encoder block halves the resolution), e.g. 96 or 192 for latent_size 48."
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
        self.image_size = image_size
        self.latent_size = latent_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.residual_hidden_size = residual_hidden_size
        self.num_residual_layers = num_residual_layers
        self.codebook_size = codebook_size
        self.commitment_cost = commitment_cost
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        self.dead_code_threshold = dead_code_threshold
        self.dead_code_noise = dead_code_noise
        super().__init__(**kwargs)

    @property
    def num_blocks(self) -> int:
        """Encoder (and decoder) blocks: one per factor of two between `image_size` and `latent_size`."""
        return int(math.log2(self.image_size // self.latent_size))

    @property
    def downsampling_factor(self) -> int:
        return 2**self.num_blocks


IGPTVQVAEConfig.register_for_auto_class()
