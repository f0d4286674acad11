"""A VQ-VAE tokenizer for 32x32 natural-image crops (shipped photos): 4x downsampling, so 64
tokens per image, and 512 codes from EMA vector quantization, or from FSQ with `:fsq`.

  igpt-fit-tokenizer --config configs/vq_images.py --workdir runs/vq_images
  igpt-fit-tokenizer --config configs/vq_images.py:fsq --workdir runs/vq_images_fsq   # levels (8, 4, 4, 4)
Saves runs/vq_images/tokenizer: use it as data.tokenizer="vq:runs/vq_images/tokenizer" (64
tokens per image, read from it; configs/transfer_vq_images.py). Expect on 2 CPU cores a held-out PSNR of about
24.0 dB over all pixels (25.6 dB as a mean of per-image PSNRs) with 97-98% of the codes in use:
EMA VQ in about 15 minutes, FSQ in 8-15. How the recipes were found: benchmarks/RESULTS.md.
"""
from igpt.data import specs
from igpt.tokenizers import vq
from igpt.tokenizers.vq import task


# Per quantizer, the recipe that measured best (the figures: benchmarks/RESULTS.md). VQ's encoder
# trains with Adam: under Muon it leaves part of the codebook unused on held-out photos.
RECIPES = {"vq": dict(steps=1650, res_blocks=2, lr=4e-3, min_lr_ratio=0.1, adam_modules=("encoder",), ema_decay=0.999),
           "fsq": dict(steps=1500, res_blocks=3, lr=4e-3, min_lr_ratio=0.3, adam_modules=(), ema_decay=0.998)}
# 512 FSQ codes as four channels: more of them used, and sharper, than as three (8, 8, 8).
FSQ_LEVELS = (8, 4, 4, 4)


def get_config(kind: str = "vq"):
    quantizer = vq.quantizer_config(kind, num_codes=512, code_dim=64, levels=FSQ_LEVELS)  # names a bad kind
    recipe = RECIPES[kind]
    c = task.base_config(
        model=vq.model_config("image", strides=(2, 2), channels=(64, 128), res_blocks=recipe["res_blocks"],
                              res_channels=64, activation="silu"),
        quantizer=quantizer,
        data=specs.images("shipped:photos", res=32, tokenizer="vq"),
        optim=task.optim_config(lr=recipe["lr"], warmup_steps=100, name="muon",
                                    adam_modules=recipe["adam_modules"], min_lr_ratio=recipe["min_lr_ratio"]),
        train=task.train_config(steps=recipe["steps"], global_batch=64),
    )
    c.train.ema_decay = recipe["ema_decay"]  # evaluate and save the weights' running average
    # Seven training photos: mirrored, turned and recoloured copies (hue turned about the grey
    # axis, saturation scaled) stand in for the textures and colours of unseen ones.
    c.train.augment = ("flip", "rotate", "hue", "saturation")
    return c
