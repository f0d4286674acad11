"""A VQ-VAE tokenizer for the shipped music at 8 kHz: 1-D convolutions with strides (4, 4),
so one token per 16 samples (500 tokens/s), 512 EMA-VQ codes.

  igpt-fit-tokenizer --config configs/vq_audio.py --workdir runs/vq_audio
Trains on random 2048-sample windows and evaluates on the held-out clips cut into 2048-sample
frames; saves runs/vq_audio/tokenizer with its held-out SNR, multi-resolution STFT distance,
codebook usage and perplexity. Expect about 5 minutes on 2 CPU cores, an SNR near 11 dB and
nearly every code in use (the figures: benchmarks/RESULTS.md).
"""
from igpt.data import specs
from igpt.tokenizers import vq
from igpt.tokenizers.vq import task


def get_config():
    return task.base_config(
        model=vq.model_config("audio", strides=(4, 4), channels=(64, 128), res_blocks=2, res_channels=64,
                              in_channels=1),
        quantizer=vq.quantizer_config("vq", num_codes=512, code_dim=64),
        data=specs.audio("shipped:music", seq_len=2048, tokenizer="vq", sample_rate=8000),
        optim=task.optim_config(lr=2e-3, warmup_steps=100),
        train=task.train_config(steps=1500, global_batch=32),
    )
