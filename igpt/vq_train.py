"""Trains a VQ-VAE tokenizer (igpt/tokenizers/vq.py) and saves it where the data pipeline loads it.

  igpt-fit-tokenizer --config configs/vq_images.py --workdir DIR   ->  DIR/tokenizer ("vq:DIR/tokenizer")

Like the GPT trainer: a pure jitted step on a batch sharded over the mesh, batch k a pure
function of (data seed, k), orbax checkpoints with exact resume (DIR/checkpoints), SIGTERM
saves and exits, and DIR/metrics.jsonl with one JSON object per line:
  train: {"step", "split": "train", "loss", "recon", "commitment", "codebook_loss", "perplexity",
          "active_codes", "restarted", "grad_norm", "lr", "step_time", "examples_per_s", "wall_time"}
  eval:  {"step", "split": "eval", "loss" (held-out reconstruction MSE on the [-1, 1] scale),
          "psnr", "psnr_image_mean" (images) | "snr", "stft" (audio), "usage", "perplexity", "wall_time"}
Eval passes over the whole held-out split. psnr comes from the mean squared error over all of
it (hard images weigh in fully); psnr_image_mean averages per-image PSNRs, as many papers do,
and reads about 1 dB higher. usage = distinct codes used / codebook size; perplexity =
exp(entropy of the code histogram). The final eval is saved with the tokenizer.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding

from igpt import checkpoint, distributed, muon, sharding
from igpt.data import audio, pipeline
from igpt.metrics import MetricsWriter
from igpt.tokenizers import quantizers, vq
from igpt.tokenizers.base import TokenizerError
from igpt.train import NonFiniteLossError, PreemptionFlag, abstract, make_schedule
from igpt.treepaths import path_names
from igpt.workdir import prepare_workdir, write_run_files

TOKENIZER_SUBDIR = "tokenizer"
STFT_SIZES = (128, 256, 512)  # FFT sizes of the multi-resolution STFT distance (16-64 ms at 8 kHz)


def optim_config(lr: float = 1e-3, warmup_steps: int = 100, name: str = "adam",
                 adam_modules: tuple[str, ...] = (), min_lr_ratio: float = 0.1) -> ml_collections.ConfigDict:
    """name: one of OPTIMIZERS; adam_modules: with "muon", the modules (dotted paths: "encoder",
    "decoder.up.1") whose kernels Adam trains; the cosine decay ends at lr * min_lr_ratio."""
    return ml_collections.ConfigDict(dict(name=name, lr=lr, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
                                          b1=0.9, b2=0.99, clip_norm=1.0, adam_modules=tuple(adam_modules)))


OPTIMIZERS = ("adam", "muon")


def dotted(path: tuple) -> str:
    """A weight's path in the params tree as optim.adam_modules spells it: "encoder.out.kernel.value"."""
    return ".".join(path_names(path))


def weight_names(params: Any) -> list[str]:
    return [dotted(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]


def in_modules(name: str, modules: tuple[str, ...]) -> bool:
    return any(name.startswith(m + ".") for m in modules)


def muon_kernels(params: Any, adam_modules: tuple[str, ...] = ()) -> Any:
    """Which weights Muon trains: kernels [*window, in, out], as matrices (window x in, out),
    except those of `adam_modules` (dotted module paths, e.g. "encoder" or "encoder.out");
    biases and those kernels are Adam's."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.ndim >= 2 and not in_modules(dotted(path), adam_modules), params)


def check_optim(o: ml_collections.ConfigDict, params: Any) -> None:
    """Refuses an unknown optimiser, or an optim.adam_modules entry that holds none of `params`
    (a typo would otherwise leave that module on Muon without a word)."""
    if o.name not in OPTIMIZERS:
        raise TokenizerError(f"optim.name {o.name!r} is unknown; use one of {OPTIMIZERS}.")
    names = weight_names(params)
    unknown = sorted(m for m in o.adam_modules if not any(in_modules(n, (m,)) for n in names))
    if unknown:
        modules = sorted({n.rsplit(".", 2)[0] for n in names})
        raise TokenizerError(f"optim.adam_modules names {unknown}, which hold no weights; name modules "
                             f"by their dotted paths: 'encoder', 'decoder' or one of {modules}.")


def make_optimizer(o: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Clipped Adam, or Muon (orthogonalised momentum) on the kernels with Adam on the biases,
    its updates scaled to Adam's RMS so the same learning rate applies. Check `o` with
    check_optim first."""
    if o.name == "muon":
        inner = muon.muon(schedule, functools.partial(muon_kernels, adam_modules=tuple(o.adam_modules)),
                          adam_b1=o.b1, adam_b2=o.b2)
    else:
        inner = optax.adam(schedule, b1=o.b1, b2=o.b2)
    return optax.chain(optax.clip_by_global_norm(o.clip_norm), inner)


def train_config(steps: int = 2000, global_batch: int = 64) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        steps=steps, global_batch=global_batch,
        augment=("flip",),  # images: any of AUGMENTATIONS
        ema_decay=0.0,  # > 0: evaluate and save a running average of the weights (see weight_average)
        log_every=50, eval_every=500, checkpoint_every=500, keep_checkpoints=2, async_checkpoint=True,
    ))


def base_config(model: ml_collections.ConfigDict, quantizer: ml_collections.ConfigDict,
                data: ml_collections.ConfigDict, *, optim: ml_collections.ConfigDict | None = None,
                train: ml_collections.ConfigDict | None = None, seed: int = 0) -> ml_collections.ConfigDict:
    """Every section the VQ trainer reads, so an override of a missing key is an error."""
    return ml_collections.ConfigDict(dict(
        seed=seed, model=model, quantizer=quantizer, data=data,
        optim=optim or optim_config(), train=train or train_config(),
        mesh=sharding.mesh_config(), distributed=distributed.distributed_config(),
    ))


# ---------------------------------------------------------------------------------------------
# Metrics (numpy, on the host)

def psnr(original: np.ndarray, reconstructed: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray | float:
    """dB of uint8 images from the mean squared error over `axis` (default: all pixels of all
    images; axis=(1, 2, 3) gives one PSNR per image)."""
    mse = np.mean((original.astype(np.float64) - reconstructed.astype(np.float64)) ** 2, axis=axis)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(255.0**2 / mse)
    return float(out) if axis is None else out


def snr(original: np.ndarray, reconstructed: np.ndarray) -> float:
    """Signal-to-noise ratio in dB over all samples: signal energy / error energy."""
    signal = np.sum(np.square(original, dtype=np.float64))
    noise = np.sum(np.square(original.astype(np.float64) - reconstructed))
    return float("inf") if noise == 0 else float(10.0 * np.log10(signal / noise))


def _magnitudes(wave: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT| [N, frames, bins] with a Hann window, hop n_fft / 4."""
    windows = np.lib.stride_tricks.sliding_window_view(wave, n_fft, axis=-1)[..., :: n_fft // 4, :]
    return np.abs(np.fft.rfft(windows * np.hanning(n_fft), axis=-1))


def stft_distance(original: np.ndarray, reconstructed: np.ndarray, sizes: tuple[int, ...] = STFT_SIZES) -> float:
    """Multi-resolution STFT distance (Yamamoto et al. 2020), averaged over FFT sizes: spectral
    convergence ||S - S'||_F / ||S||_F plus mean |log S - log S'| (magnitudes floored at 1e-5).
    0 for identical audio; frames [N, T] need T >= max(sizes)."""
    total = 0.0
    for n_fft in sizes:
        s, r = _magnitudes(original, n_fft), _magnitudes(reconstructed, n_fft)
        total += np.linalg.norm(s - r) / max(np.linalg.norm(s), 1e-12)
        total += np.mean(np.abs(np.log(np.maximum(s, 1e-5)) - np.log(np.maximum(r, 1e-5))))
    return float(total / len(sizes))


def code_usage(codes: np.ndarray, num_codes: int) -> float:
    """Fraction of the codebook used at least once in `codes`."""
    return len(np.unique(codes)) / num_codes


def perplexity(codes: np.ndarray, num_codes: int) -> float:
    """exp(entropy) of the code histogram: num_codes when all are used equally, 1 for one code."""
    p = np.bincount(np.ravel(codes), minlength=num_codes) / max(np.size(codes), 1)
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def check_audio_frames(cfg: ml_collections.ConfigDict) -> None:
    """Audio trains on random data.seq_len-sample windows and evaluates on the held-out clips cut
    into data.seq_len-sample frames (as the data pipeline cuts them): check that length fits."""
    frame, down = cfg.data.seq_len, vq.downsample(cfg.model)
    if frame <= 0 or frame % down or frame < max(STFT_SIZES):
        raise TokenizerError(f"data.seq_len={frame} samples must be a positive multiple of the downsampling {down} "
                             f"and at least {max(STFT_SIZES)} (the largest STFT of the eval); e.g. 2048.")


def held_out(cfg: ml_collections.ConfigDict, examples: Any) -> np.ndarray:
    """The eval inputs: every held-out image, or every held-out clip cut into data.seq_len-sample frames."""
    if cfg.model.modality == "image":
        return examples
    return np.concatenate([audio.frames(w, cfg.data.seq_len) for w in examples])


def evaluate(tokenizer: vq.VQTokenizer, inputs: np.ndarray) -> dict[str, float]:
    """Reconstruction and codebook metrics over a full pass of `inputs`."""
    codes = tokenizer.encode(inputs)
    recon = tokenizer.decode(codes)
    k = tokenizer.vocab_size
    out = {"usage": code_usage(codes, k), "perplexity": perplexity(codes, k)}
    if tokenizer.modality == "image":
        out["loss"] = float(np.mean(np.square(vq.to_unit(inputs) - vq.to_unit(recon))))
        out["psnr"] = psnr(inputs, recon)
        out["psnr_image_mean"] = float(np.mean(psnr(inputs, recon, axis=(1, 2, 3))))
    else:
        out["loss"] = float(np.mean(np.square(inputs - recon)))
        out["snr"] = snr(inputs, recon)
        out["stft"] = stft_distance(inputs, recon)
    return out


# ---------------------------------------------------------------------------------------------
# Batches: batch k is a pure function of (data seed, k)

def _rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step])


AUGMENTATIONS = ("flip", "rotate", "channels", "hue", "saturation", "contrast")
GREY_AXIS = np.full(3, 1 / np.sqrt(3), np.float32)
COLOUR_AUGMENTATIONS = frozenset({"hue", "saturation"})  # need RGB images
SATURATION_RANGE = (0.6, 1.4)  # chroma scale: +0.06 dB held-out PSNR over hue turns alone (RESULTS.md)
CONTRAST_RANGE = (0.7, 1.3)  # deviation scale: -0.03 to -0.05 dB on the photos, so off in configs (RESULTS.md)


def recolour(images: np.ndarray, angles: np.ndarray, mirror: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """uint8 RGB images with each image's colours turned about the grey axis by its angle
    (radians) after swapping red and green where `mirror`, and their distance from grey scaled
    by its saturation: grey levels stay, hues and their strength move. The six channel
    permutations are the turns by multiples of 2 pi / 3, mirrored or not."""
    x = images.astype(np.float32)
    x[mirror] = x[mirror][..., [1, 0, 2]]
    grey = x.mean(axis=-1, keepdims=True)
    chroma, angles = x - grey, angles[:, None, None, None]
    turned = chroma * np.cos(angles) + np.cross(GREY_AXIS, chroma) * np.sin(angles)
    return np.clip(np.rint(grey + turned * saturation[:, None, None, None]), 0, 255).astype(np.uint8)


def rescale_contrast(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """uint8 images with each image's deviations from its own mean level scaled by its factor
    (clipped to [0, 255]), so flat photos also train the decoder on strong edges."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip(np.rint(mean + (x - mean) * factors[:, None, None, None]), 0, 255).astype(np.uint8)


def image_batch(images: np.ndarray, step: int, batch: int, seed: int,
                augment: tuple[str, ...] = ("flip",)) -> np.ndarray:
    """float32 [batch, H, W, C] in [-1, 1]: distinct random images, each (per `augment`) mirrored
    with probability 1/2, turned by a random multiple of 90 degrees, its colour channels shuffled,
    its hues turned by a random angle, its saturation scaled, its contrast scaled. A few
    training photos then stand for more of the textures and colours held-out photos have."""
    rng = _rng(seed, step)
    x = images[rng.choice(len(images), batch, replace=len(images) < batch)]
    if "flip" in augment:
        flip = rng.random(batch) < 0.5
        x[flip] = x[flip, :, ::-1]
    if "rotate" in augment:
        x = np.stack([np.rot90(img, k) for img, k in zip(x, rng.integers(0, 4, batch))])
    if "channels" in augment:
        x = np.take_along_axis(x, np.stack([rng.permutation(x.shape[-1]) for _ in x])[:, None, None, :], axis=-1)
    if COLOUR_AUGMENTATIONS & set(augment):
        hue = "hue" in augment
        mirror = rng.random(batch) < 0.5 if hue else np.zeros(batch, bool)
        angles = rng.uniform(0, 2 * np.pi, batch) if hue else np.zeros(batch)
        saturation = rng.uniform(*SATURATION_RANGE, batch) if "saturation" in augment else np.ones(batch)
        x = recolour(x, angles, mirror, saturation)
    if "contrast" in augment:
        x = rescale_contrast(x, rng.uniform(*CONTRAST_RANGE, batch))
    return vq.to_unit(x)


def audio_batch(waves: list[np.ndarray], step: int, batch: int, seed: int, crop: int) -> np.ndarray:
    """float32 [batch, crop, 1]: windows of `crop` samples at random places in random clips."""
    rng = _rng(seed, step)
    clips = rng.integers(0, len(waves), batch)
    starts = [int(rng.integers(0, len(waves[c]) - crop + 1)) for c in clips]
    return np.stack([waves[c][s:s + crop] for c, s in zip(clips, starts)])[..., None]


def batch_fn(cfg: ml_collections.ConfigDict, train: Any) -> Callable[[int], np.ndarray]:
    """step -> this process's rows of global batch `step`."""
    b, p, n = cfg.train.global_batch, jax.process_index(), jax.process_count()
    rows = slice(p * b // n, (p + 1) * b // n)
    if cfg.model.modality == "image":
        unknown = set(cfg.train.augment) - set(AUGMENTATIONS)
        if unknown:
            raise TokenizerError(f"train.augment has {sorted(unknown)}; choose from {AUGMENTATIONS}.")
        colour = COLOUR_AUGMENTATIONS & set(cfg.train.augment)
        if colour and train.shape[-1] != 3:
            raise TokenizerError(f"train.augment {sorted(colour)} recolour RGB images, but {cfg.data.source} images "
                                 f"have {train.shape[-1]} channel(s); drop them from train.augment.")
        return lambda step: image_batch(train, step, b, cfg.data.seed, tuple(cfg.train.augment))[rows]
    crop = cfg.data.seq_len
    if any(len(w) < crop for w in train):
        raise TokenizerError(f"data.seq_len={crop} samples is longer than the shortest training clip "
                             f"({min(len(w) for w in train)} samples); lower it.")
    return lambda step: audio_batch(train, step, b, cfg.data.seed, crop)[rows]


# ---------------------------------------------------------------------------------------------
# The step

def weight_average(average: Any, params: Any, step: jax.Array, decay: float) -> Any:
    """One step of the exponential moving average of the weights (Polyak averaging), with the
    decay ramped as min(decay, (1 + step) / (10 + step)) so early weights fade fast. Averaged
    weights reconstruct better than the last ones of a short, noisy run."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda a, p: a + (1.0 - d) * (p - a), average, params)


def objective(graphdef: Any, quantizer: ml_collections.ConfigDict, params: Any, qstate: dict[str, jax.Array],
              x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any, jax.Array]]:
    """(reconstruction MSE + beta * commitment, (latents, quantizer output, MSE)). The codebook
    enters only through the quantizer's stop-gradients: it moves by the EMA, never by this loss."""
    model = nnx.merge(graphdef, params)
    z = model.encode(x)
    out = vq.quantize(quantizer, qstate, z)
    recon = jnp.mean(jnp.square(model.decode(out.z_q) - x))
    beta = quantizer.beta if quantizer.kind == "vq" else 0.0
    return recon + beta * out.commitment_loss, (z, out, recon)


def make_train_step(graphdef: Any, cfg: ml_collections.ConfigDict, tx: optax.GradientTransformation) -> Callable:
    """(state, x) -> (state, metrics): Adam on `objective`, the weights' running average (when
    train.ema_decay > 0), then the codebook's EMA step and dead-code restarts (VQ), all on the
    global batch."""
    q = cfg.quantizer
    grad_fn = jax.value_and_grad(functools.partial(objective, graphdef, q), has_aux=True)

    def step(state, x):
        qstate = state.get("quantizer", {})
        (loss, (z, out, recon)), grads = grad_fn(state["params"], qstate, x)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = dict(state, params=optax.apply_updates(state["params"], updates), opt_state=opt_state,
                   step=state["step"] + 1)
        if "ema_params" in state:
            new["ema_params"] = weight_average(state["ema_params"], new["params"], state["step"],
                                               cfg.train.ema_decay)
        k = vq.num_codes(q)
        hist = jnp.bincount(out.codes.reshape(-1), length=k) / out.codes.size
        metrics = {"loss": loss, "recon": recon, "commitment": out.commitment_loss,
                   "codebook_loss": out.codebook_loss, "grad_norm": optax.tree.norm(grads),
                   "perplexity": jnp.exp(-jnp.sum(jnp.where(hist > 0, hist * jnp.log(hist), 0.0)))}
        if q.kind == "vq":
            key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
            new["quantizer"], metrics["restarted"] = quantizers.vq_ema_update(
                qstate, z, out.codes, key, decay=q.decay, dead_threshold=q.dead_threshold, l2=q.l2)
            metrics["active_codes"] = jnp.mean(new["quantizer"]["ema_count"] >= q.dead_threshold)
        return new, metrics

    return step


def _kmeans_init(graphdef, cfg, params, batches: Callable[[int], np.ndarray], put) -> dict[str, jax.Array]:
    """The codebook from k-means over the initial encoder's latents of the first batches."""
    q = cfg.quantizer
    encode = jax.jit(lambda p, x: nnx.merge(graphdef, p).encode(x))
    z = jnp.concatenate([encode(params, put(batches(i))) for i in range(q.kmeans_batches)])
    batch_vectors = z.size // z.shape[-1] // q.kmeans_batches
    quantizers.check_vq_settings(q.num_codes, q.decay, q.dead_threshold, batch_vectors)
    init = jax.jit(lambda z, key: quantizers.vq_kmeans_init(z, q.num_codes, key, q.kmeans_iters, batch_vectors, q.l2))
    return init(z, jax.random.key(cfg.seed))


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(f"non-finite {bad} at VQ step {step}; the last good checkpoint is kept: lower "
                                 "optim.lr, then rerun to resume from it.")


# ---------------------------------------------------------------------------------------------
# The loop

def fit(cfg: ml_collections.ConfigDict, workdir: str | Path,
        log: Callable[[str], None] = print) -> vq.VQTokenizer | None:
    """Trains (or resumes) the VQ-VAE in `workdir`, evaluates it on the whole held-out split and
    saves it with those metrics to workdir/tokenizer. Returns the tokenizer, or None when SIGTERM
    stopped the run (it saved a checkpoint: rerun to resume)."""
    distributed.maybe_initialize(cfg.distributed)
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise TokenizerError(f"train.ema_decay={cfg.train.ema_decay} must lie in [0, 1): 0 saves the last weights, "
                             "e.g. 0.999 their running average.")
    vq.check_model(cfg.model)
    check_optim(cfg.optim, nnx.state(vq.abstract_model(cfg.model, cfg.quantizer), nnx.Param))
    workdir = prepare_workdir(workdir)
    if cfg.model.modality == "audio":
        check_audio_frames(cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    sharding.check_batch(cfg.train.global_batch, mesh, sharding.DEFAULT_RULES)
    is_main = jax.process_index() == 0
    train_examples = pipeline.load_examples(cfg.data, cfg.data.train_split)
    eval_inputs = held_out(cfg, pipeline.load_examples(cfg.data, cfg.data.eval_split))
    if cfg.model.modality == "image" and train_examples.shape[-1] != cfg.model.in_channels:
        raise TokenizerError(f"{cfg.data.source} images have {train_examples.shape[-1]} channels but "
                             f"model.in_channels is {cfg.model.in_channels}; set --config.model.in_channels="
                             f"{train_examples.shape[-1]}.")
    batches = batch_fn(cfg, train_examples)
    batch_sharding = NamedSharding(mesh, sharding.logical_spec(("batch",), sharding.DEFAULT_RULES))
    put = lambda rows: jax.make_array_from_process_local_data(
        batch_sharding, rows, (cfg.train.global_batch,) + rows.shape[1:])
    replicate = lambda tree: jax.device_put(tree, sharding.replicated(mesh))

    with jax.set_mesh(mesh):
        schedule = make_schedule(cfg.optim, cfg.train.steps)
        tx = make_optimizer(cfg.optim, schedule)
        graphdef, params = vq.init_params(cfg.model, cfg.quantizer, cfg.seed)
        params = replicate(params)
        state = {"params": params, "opt_state": jax.jit(tx.init)(params),
                 "step": replicate(jnp.zeros((), jnp.int32)),
                 "rng": replicate(jax.random.key_data(jax.random.key(cfg.seed + 1)))}
        if cfg.train.ema_decay:
            state["ema_params"] = jax.tree.map(jnp.copy, params)
        if cfg.quantizer.kind == "vq":
            k, d = cfg.quantizer.num_codes, cfg.quantizer.code_dim
            state["quantizer"] = replicate(quantizers.vq_state(jnp.zeros((k, d)), jnp.zeros((k,))))
        ckpt = checkpoint.Checkpointer(workdir, cfg.train.keep_checkpoints, cfg.train.async_checkpoint)
        start = ckpt.latest_step()
        if start is not None:
            state, _ = ckpt.restore(start, abstract(state))
            log(f"resumed from step {start}")
        elif cfg.quantizer.kind == "vq":
            state["quantizer"] = replicate(_kmeans_init(graphdef, cfg, state["params"], batches, put))
        write_run_files(workdir, cfg, enabled=is_main)
        step_fn = jax.jit(make_train_step(graphdef, cfg, tx), donate_argnums=0)
        writer = MetricsWriter(workdir, enabled=is_main)
        try:
            state, stopped = _loop(cfg, state, step_fn, batches, put, schedule, ckpt, eval_inputs, writer, log,
                                   start or 0)
            if stopped:
                return None
            tokenizer = _tokenizer(cfg, state)
            tokenizer.metrics = evaluate(tokenizer, eval_inputs)
            writer.write(dict(tokenizer.metrics, step=cfg.train.steps, split="eval", wall_time=time.time()))
        finally:
            writer.close()
    log("held-out " + _summary(tokenizer.metrics))
    if is_main:
        tokenizer.save(workdir / TOKENIZER_SUBDIR)
        log(f"saved {workdir / TOKENIZER_SUBDIR}: use it as data.tokenizer='vq:{workdir / TOKENIZER_SUBDIR}'")
    return tokenizer


def _tokenizer(cfg: ml_collections.ConfigDict, state: dict[str, Any]) -> vq.VQTokenizer:
    """The tokenizer of the averaged weights when there are any, else of the last ones."""
    params = state.get("ema_params", state["params"])
    return vq.VQTokenizer(cfg.model, cfg.quantizer, params, state.get("quantizer", {}))


def _summary(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))


def _loop(cfg, state, step_fn, batches, put, schedule, ckpt, eval_inputs, writer, log, start):
    """Steps from `start` to train.steps; returns (state, whether SIGTERM stopped it)."""
    t = cfg.train
    preempt = PreemptionFlag()
    step, stop = start, False
    try:
        tick, ticked = time.perf_counter(), start
        while step < t.steps and not stop:
            state, dev = step_fn(state, put(batches(step)))
            step += 1
            if step % t.log_every == 0 or step == t.steps:
                m = {k: float(v) for k, v in jax.device_get(dev).items()}
                _check_finite(step, m)
                now = time.perf_counter()
                dt, tick, ticked = (now - tick) / (step - ticked), now, step
                writer.write(dict(m, step=step, split="train", lr=float(schedule(step - 1)), step_time=dt,
                                  examples_per_s=t.global_batch / dt, wall_time=time.time()))
                log(f"step {step}: loss {m['loss']:.5f} recon {m['recon']:.5f} perplexity {m['perplexity']:.1f}"
                    + (f" active {m['active_codes']:.1%}" if "active_codes" in m else "")
                    + f" {t.global_batch / dt:.0f} examples/s")
            stop = preempt.agreed()
            if step % t.eval_every == 0 and step < t.steps and not stop:
                m = evaluate(_tokenizer(cfg, state), eval_inputs)
                writer.write(dict(m, step=step, split="eval", wall_time=time.time()))
                log(f"step {step}: eval {_summary(m)}")
                tick, ticked = time.perf_counter(), step
            if step % t.checkpoint_every == 0 or step == t.steps or stop:
                ckpt.save(step, state, {"step": step})
        if stop:
            log(f"SIGTERM: saved step {step}; exiting. Rerun the same command to resume.")
        ckpt.wait()
    finally:
        preempt.restore()
        ckpt.close()
    return state, stop


def main(argv: list[str]) -> None:
    """igpt-fit-tokenizer --config configs/vq_images.py --workdir DIR [--config.a.b=v ...]

    Flags live in a FlagValues of their own, so this shares a command with the argparse
    palette path and defines nothing at import time."""
    from absl import flags
    from ml_collections import config_flags

    from igpt.errors import fail_clearly

    values = flags.FlagValues()
    config = config_flags.DEFINE_config_file("config", None, "VQ tokenizer config with get_config().",
                                             flag_values=values)
    workdir = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, tokenizer/.",
                                  flag_values=values)
    try:
        rest = values(["igpt-fit-tokenizer", *argv])
    except flags.Error as e:
        raise SystemExit(f"igpt-fit-tokenizer: error: {e}") from None
    if len(rest) > 1 or config.value is None or not workdir.value:
        raise SystemExit("usage: igpt-fit-tokenizer --config configs/vq_images.py --workdir DIR "
                         f"[--config.a.b=v ...]{f' (unexpected {rest[1:]})' if len(rest) > 1 else ''}")
    with fail_clearly():
        fit(config.value, workdir.value)
    distributed.shutdown()
