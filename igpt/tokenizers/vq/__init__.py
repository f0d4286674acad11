"""Learned VQ tokenizers: a VQ-VAE whose convolutional encoder turns an image (2-D) or a
waveform (1-D) into a grid of codes, one token per code, and whose decoder turns tokens back.

  network.py     the VQ-VAE (encoder, decoder) and its config
  quantizers.py  EMA vector quantization and FSQ behind the Quantizer protocol, and its config
  tokenizer.py   VQTokenizer: encode, decode, save, load
  task.py        fitting it with the training loop (igpt-fit-tokenizer --config ...)
  augment.py     the step-indexed training batches (what differs per modality: igpt/modalities/)
"""
from igpt.tokenizers.vq.network import (VQVAE, abstract_model, activation, check_model, downsample, init_params,
                                        model_config, to_uint8, to_unit)
from igpt.tokenizers.vq.quantizers import Quantizer, build_quantizer, quantizer_config
from igpt.tokenizers.vq.tokenizer import KIND, HELD_OUT_METRICS_FILE, VQTokenizer, image_seq_len

__all__ = ["KIND", "HELD_OUT_METRICS_FILE", "Quantizer", "VQTokenizer", "VQVAE", "abstract_model", "activation",
           "build_quantizer", "check_model", "downsample", "image_seq_len", "init_params", "model_config",
           "quantizer_config", "to_uint8", "to_unit"]
