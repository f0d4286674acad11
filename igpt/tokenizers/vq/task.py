"""Fitting a VQ tokenizer: a task for the training loop (igpt/training/loop.py).

  igpt-fit-tokenizer --config configs/vq_images.py --workdir DIR   ->  DIR/tokenizer ("vq:DIR/tokenizer")

The step trains the VQ-VAE on `objective`, keeps the weights' running average (train.ema_decay
> 0), then moves the codebook by its EMA and restarts dead codes (VQ), all on the global batch.
metrics.jsonl holds, besides the loop's fields ("step", "split", "lr", "step_time",
"examples_per_s", "wall_time"):
  train: "loss", "recon", "commitment", "codebook_loss", "perplexity", "grad_norm",
         and for VQ "active_codes", "restarted"
  eval:  "loss" (held-out reconstruction MSE on the [-1, 1] scale), "psnr", "psnr_image_mean"
         (images) | "snr", "stft" (audio), "usage", "perplexity"
Eval passes over the whole held-out split. The modality (igpt/modalities/) supplies the
training batches, the held-out inputs and the reconstruction metrics; the quantizer
(quantizers.Quantizer) its state, k-means start and per-step update. usage = distinct codes
used / codebook size; perplexity = exp(entropy of the code histogram). The final eval is saved
with the tokenizer, and RUN/reconstructions.png shows held-out examples beside their reconstructions.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from igpt import sharding
from igpt.data import pipeline, specs
from igpt.modalities import signal
from igpt.modalities.image import write_png
from igpt.tokenizers.base import TokenizerError
from igpt.tokenizers.reconstruction import code_usage, perplexity
from igpt.tokenizers.vq.network import abstract_model, check_model, init_params, model_config as network_config
from igpt.tokenizers.vq.quantizers import build_quantizer, quantizer_config
from igpt.tokenizers.vq.tokenizer import VQTokenizer
from igpt.training import loop, optim
from igpt.training.rundir import RunDir
from igpt.treepaths import path_names

OPTIMIZERS = ("adam", "muon")
PICTURED = 8  # held-out examples in the reconstructions picture
RECONSTRUCTIONS_FILE = "reconstructions.png"


def optim_config(lr: float = 1e-3, warmup_steps: int = 100, name: str = "adam",
                 adam_modules: tuple[str, ...] = (), min_lr_ratio: float = 0.1) -> ml_collections.ConfigDict:
    """Adam, or Muon on the kernels with Adam on the biases and on `adam_modules` (dotted module
    paths: "encoder", "decoder.up.1"); the cosine decay ends at lr * min_lr_ratio."""
    return optim.optim_config(name, lr, warmup_steps, min_lr_ratio=min_lr_ratio, b2=0.99, weight_decay=0.0,
                              adam_modules=adam_modules)


def train_config(steps: int = 2000, global_batch: int = 64) -> ml_collections.ConfigDict:
    t = loop.train_config(steps, global_batch,
                          augment=("flip",),  # images: any of augment.AUGMENTATIONS
                          ema_decay=0.0)  # > 0: evaluate and save a running average of the weights
    t.update(log_every=50, eval_every=500, checkpoint_every=500, keep_checkpoints=2)
    return t


def base_config(model: ml_collections.ConfigDict, quantizer: ml_collections.ConfigDict,
                data: ml_collections.ConfigDict, *, optim: ml_collections.ConfigDict | None = None,
                train: ml_collections.ConfigDict | None = None, seed: int = 0) -> ml_collections.ConfigDict:
    """Every section a VQ fitting run reads, so an override of a missing key is an error."""
    return loop.run_config(seed=seed, train=train or train_config(), optim_cfg=optim or optim_config(),
                           model=model, quantizer=quantizer, data=data)


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
    """Refuses an optim.adam_modules entry that holds none of `params` (a typo would otherwise
    leave that module on Muon without a word)."""
    names = weight_names(params)
    unknown = sorted(m for m in o.adam_modules if not any(in_modules(n, (m,)) for n in names))
    if unknown:
        modules = sorted({n.rsplit(".", 2)[0] for n in names})
        raise TokenizerError(f"optim.adam_modules names {unknown}, which hold no weights; name modules "
                             f"by their dotted paths: 'encoder', 'decoder' or one of {modules}.")


def evaluate(tokenizer: VQTokenizer, inputs: np.ndarray) -> dict[str, float]:
    """Reconstruction and codebook metrics over a full pass of `inputs`."""
    codes = tokenizer.encode(inputs)
    recon = tokenizer.decode(codes)
    k = tokenizer.vocab_size
    return {"usage": code_usage(codes, k), "perplexity": perplexity(codes, k),
            **tokenizer.modality.reconstruction(inputs, recon)}

def batch_fn(cfg: ml_collections.ConfigDict, train: Any) -> Callable[[int], np.ndarray]:
    """step -> this process's rows of global batch `step` (the modality's fit_batches)."""
    b, p, n = cfg.train.global_batch, jax.process_index(), jax.process_count()
    rows = slice(p * b // n, (p + 1) * b // n)
    global_batch = signal(cfg.model.modality).fit_batches(cfg, train)
    return lambda step: global_batch(step)[rows]

def weight_average(average: Any, params: Any, step: jax.Array, decay: float) -> Any:
    """One step of the exponential moving average of the weights (Polyak averaging), with the
    decay ramped as min(decay, (1 + step) / (10 + step)) so early weights fade fast. Averaged
    weights reconstruct better than the last ones of a short, noisy run."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda a, p: a + (1.0 - d) * (p - a), average, params)

def objective(graphdef: Any, quantizer: ml_collections.ConfigDict, params: Any, qstate: dict[str, jax.Array],
              x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any, jax.Array]]:
    """(reconstruction MSE + commitment weight * commitment, (latents, quantizer output, MSE)).
    The codebook enters only through the quantizer's stop-gradients: it moves by its update
    (VQ's EMA), never by this loss."""
    q = build_quantizer(quantizer)
    model = nnx.merge(graphdef, params)
    z = model.encode(x)
    out = q.quantize(qstate, z)
    recon = jnp.mean(jnp.square(model.decode(out.z_q) - x))
    return recon + q.commitment_weight * out.commitment_loss, (z, out, recon)

def make_train_step(graphdef: Any, cfg: ml_collections.ConfigDict, tx: optax.GradientTransformation) -> Callable:
    """(state, x) -> (state, metrics): Adam on `objective`, the weights' running average (when
    train.ema_decay > 0), then the quantizer's update (VQ: the codebook's EMA step and dead-code
    restarts), all on the global batch."""
    quantizer = build_quantizer(cfg.quantizer)
    grad_fn = jax.value_and_grad(functools.partial(objective, graphdef, cfg.quantizer), has_aux=True)

    def step(state, x):
        qstate = state.get("quantizer", {})
        (loss, (z, out, recon)), grads = grad_fn(state["params"], qstate, x)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = dict(state, params=optax.apply_updates(state["params"], updates), opt_state=opt_state,
                   step=state["step"] + 1)
        if "ema_params" in state:
            new["ema_params"] = weight_average(state["ema_params"], new["params"], state["step"],
                                               cfg.train.ema_decay)
        hist = jnp.bincount(out.codes.reshape(-1), length=quantizer.num_codes) / out.codes.size
        metrics = {"loss": loss, "recon": recon, "commitment": out.commitment_loss,
                   "codebook_loss": out.codebook_loss, "grad_norm": optax.tree.norm(grads),
                   "perplexity": jnp.exp(-jnp.sum(jnp.where(hist > 0, hist * jnp.log(hist), 0.0)))}
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        qstate, quantizer_metrics = quantizer.update(qstate, z, out.codes, key)
        if qstate:  # a quantizer with state (VQ's codebook) carries it in the train state
            new["quantizer"] = qstate
        return new, {**metrics, **quantizer_metrics}

    return step


def _summary(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))


class VQFitTask:
    """Fits the VQ-VAE of `cfg` (base_config's sections) and saves it as a tokenizer."""

    kind = "vq"
    optimizers = OPTIMIZERS
    unit, units_per_row, flops_per_unit = "example", 1, 0.0

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.cfg = cfg
        self.graphdef: Any = None
        self.quantizer = build_quantizer(cfg.quantizer)

    def check(self) -> None:
        cfg = self.cfg
        if not 0.0 <= cfg.train.ema_decay < 1.0:
            raise TokenizerError(f"train.ema_decay={cfg.train.ema_decay} must lie in [0, 1): 0 saves the last weights, "
                                 "e.g. 0.999 their running average.")
        check_model(cfg.model)
        check_optim(cfg.optim, nnx.state(abstract_model(cfg.model, cfg.quantizer), nnx.Param))
        signal(cfg.model.modality).check_fit(cfg)

    def setup(self, run: RunDir, mesh: jax.sharding.Mesh) -> None:
        cfg = self.cfg
        modality = signal(cfg.model.modality)
        train_examples = pipeline.load_examples(cfg.data, cfg.data.train_split)
        self.eval_inputs = modality.held_out(cfg, pipeline.load_examples(cfg.data, cfg.data.test_split))
        channels = modality.channels(train_examples)
        if channels != cfg.model.in_channels:
            raise TokenizerError(f"{cfg.data.source} {modality.name} examples have {channels} channels but "
                                 f"model.in_channels is {cfg.model.in_channels}; set --config.model.in_channels="
                                 f"{channels}.")
        self.rows = batch_fn(cfg, train_examples)
        self.mesh = mesh

    def new_state(self, mesh: jax.sharding.Mesh) -> dict[str, Any]:
        cfg = self.cfg
        replicate = lambda tree: jax.device_put(tree, sharding.replicated(mesh))
        self.graphdef, params = init_params(cfg.model, cfg.quantizer, cfg.seed)
        state = {"params": replicate(params), "rng": replicate(jax.random.key_data(jax.random.key(cfg.seed + 1)))}
        if cfg.train.ema_decay:
            state["ema_params"] = jax.tree.map(jnp.copy, state["params"])
        qstate = self.quantizer.initial_state()
        if qstate:
            state["quantizer"] = replicate(qstate)
        return state

    def optimizer_masks(self, params: Any) -> tuple[Any, Any]:
        return None, functools.partial(muon_kernels, adam_modules=tuple(self.cfg.optim.adam_modules))

    def initialize(self, state: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
        """The quantizer's start from the initial encoder's latents (VQ: k-means)."""
        encode = jax.jit(lambda p, x: nnx.merge(self.graphdef, p).encode(x))
        put = lambda step: sharding.put_batch(self.rows(step), mesh, tuple(self.cfg.axis_rules))
        qstate = self.quantizer.warm_start(lambda i: encode(state["params"], put(i)), jax.random.key(self.cfg.seed))
        if qstate:
            state["quantizer"] = jax.device_put(qstate, sharding.replicated(mesh))
        return state

    def meta(self) -> dict[str, Any]:
        return {"seed": self.cfg.seed, "data_seed": self.cfg.data.seed, "codes": self.quantizer.num_codes}

    def run_info(self) -> dict[str, Any]:
        return {}

    def make_train_step(self, tx: optax.GradientTransformation) -> Callable:
        return make_train_step(self.graphdef, self.cfg, tx)

    def tokenizer(self, state: dict[str, Any]) -> VQTokenizer:
        """The tokenizer of the averaged weights when there are any, else of the last ones."""
        params = state.get("ema_params", state["params"])
        return VQTokenizer(self.cfg.model, self.cfg.quantizer, params, state.get("quantizer", {}))

    def evaluate(self, state: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Held-out metrics on the test split, as split "eval" (no selection is made on them)."""
        return {"eval": evaluate(self.tokenizer(state), self.eval_inputs)}

    def describe(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        return {}

    def picture(self, state: dict[str, Any]) -> np.ndarray:
        """The first held-out examples beside their reconstructions now (every train.sample_every
        steps, and RUN/reconstructions.png at the end)."""
        tokenizer = self.tokenizer(state)
        examples = self.eval_inputs[:PICTURED]
        return tokenizer.modality.reconstruction_picture(examples, tokenizer.decode(tokenizer.encode(examples)))

    def finish(self, state: dict[str, Any], run: RunDir, last_eval: dict[str, dict[str, float]]) -> VQTokenizer:
        tokenizer = self.tokenizer(state)
        tokenizer.metrics = dict(last_eval["eval"])
        picture = self.picture(state)
        if jax.process_index() == 0:
            print("held-out " + _summary(tokenizer.metrics), flush=True)
            tokenizer.save(run.tokenizer)
            write_png(run.root / RECONSTRUCTIONS_FILE, picture)
            print(f"saved {run.tokenizer}: use it as data.tokenizer='vq:{run.tokenizer}'; held-out examples beside "
                  f"their reconstructions in {run.root / RECONSTRUCTIONS_FILE}", flush=True)
        return tokenizer

    def defaults(self) -> ml_collections.ConfigDict:
        return base_config(network_config(), quantizer_config(), specs.images(""))


def fit(cfg: ml_collections.ConfigDict, workdir: str) -> VQTokenizer | None:
    """Fits (or resumes) the tokenizer in `workdir` and saves it to workdir/tokenizer with its
    held-out metrics. Returns it, or None when a signal stopped the run (rerun to resume)."""
    return loop.run(VQFitTask(cfg), workdir).result
