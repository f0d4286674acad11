"""Donors: a GPT-2 checkpoint imported computes GPT-2's logits; grown vocabularies, widths and
depths compute the donor's function before any training."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from igpt import sharding
from igpt.model import Transformer
from igpt.training.loop import on_mesh
from igpt.transfer import donors, init as transfer_init
from igpt.transfer.arms import SOURCE_MODES, TransferError, parse_arm
from igpt.transfer.donors import growth, hf_gpt2, shipped
from igpt.transfer.donors.safetensors_numpy import read_safetensors

GPT2 = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=300, n_positions=64, n_embd=64,
            n_layer=2, n_head=4, n_inner=None, activation_function="gelu_new", layer_norm_epsilon=1e-5,
            bos_token_id=299, eos_token_id=299, tie_word_embeddings=True)
MESHES = {1: dict(num_devices=1), 8: dict(data=2, fsdp=2, tensor=2)}


def make_mesh(devices: int) -> jax.sharding.Mesh:
    cfg = sharding.mesh_config()
    cfg.update(MESHES[devices])
    return sharding.make_mesh(cfg)


def numpy_igpt_logits(flat: growth.Flat, tokens: np.ndarray, vocab: int, eps: float) -> np.ndarray:
    """igpt's Transformer (GELU MLP, learned positions; biases and a tied head if present) in
    float64 numpy on flat params, to check growth on many shapes without compiling each."""
    p = {"/".join(k[:-1]): v.astype(np.float64) for k, v in flat.items()}
    bias = lambda name: p.get(name, 0.0)  # noqa: E731

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * p[name + "/scale"] + p[name + "/bias"]

    length = tokens.shape[1]
    x = p["embed"][tokens] + p["pos"][:length]
    causal = np.tril(np.ones((length, length), bool))
    for i in range(len({k.split("/")[1] for k in p if k.startswith("blocks/")})):
        b = f"blocks/{i}/"
        h = norm(x, b + "norm1")
        q, k, v = (np.einsum("btd,dhk->bthk", h, p[b + f"attn/w{n}"]) + bias(b + f"attn/b{n}") for n in "qkv")
        s = np.where(causal, np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(q.shape[-1]), -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        o = np.einsum("bhqt,bthk->bqhk", a / a.sum(-1, keepdims=True), v)
        x = x + np.einsum("bqhk,hkd->bqd", o, p[b + "attn/wo"]) + bias(b + "attn/bo")
        m = norm(x, b + "norm2") @ p[b + "mlp/w_in"] + bias(b + "mlp/b_in")
        m = 0.5 * m * (1 + np.tanh(np.sqrt(2 / np.pi) * (m + 0.044715 * m**3)))
        x = x + m @ p[b + "mlp/w_out"] + bias(b + "mlp/b_out")
    return norm(x, "final_norm") @ (p["head"] if "head" in p else p["embed"][:vocab].T)


def gpt2_tensors(hf: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random GPT-2 weights named as GPT2LMHeadModel saves them, norms and biases far from 1 and 0."""
    rng = np.random.default_rng(seed)
    d, f, vocab = hf["n_embd"], hf["n_inner"] or 4 * hf["n_embd"], hf["vocab_size"]

    def w(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    t = {"wte.weight": w(vocab, d), "wpe.weight": w(hf["n_positions"], d),
         "ln_f.weight": 1 + w(d), "ln_f.bias": w(d)}
    for i in range(hf["n_layer"]):
        t.update({f"h.{i}.ln_1.weight": 1 + w(d), f"h.{i}.ln_1.bias": w(d),
                  f"h.{i}.attn.c_attn.weight": w(d, 3 * d), f"h.{i}.attn.c_attn.bias": w(3 * d),
                  f"h.{i}.attn.c_proj.weight": w(d, d), f"h.{i}.attn.c_proj.bias": w(d),
                  f"h.{i}.ln_2.weight": 1 + w(d), f"h.{i}.ln_2.bias": w(d),
                  f"h.{i}.mlp.c_fc.weight": w(d, f), f"h.{i}.mlp.c_fc.bias": w(f),
                  f"h.{i}.mlp.c_proj.weight": w(f, d), f"h.{i}.mlp.c_proj.bias": w(d)})
    return {"transformer." + k: v for k, v in t.items()}


def numpy_gpt2_logits(tensors: dict[str, np.ndarray], hf: dict, tokens: np.ndarray) -> np.ndarray:
    """GPT-2's forward pass written from its definition, in float64, on HF's tensor layout."""
    t = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in tensors.items()}
    heads, eps, length = hf["n_head"], hf["layer_norm_epsilon"], tokens.shape[1]

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * t[name + ".weight"] + t[name + ".bias"]

    def split(x):  # [b, t, d] -> [b, heads, t, head_dim]
        return x.reshape(*x.shape[:2], heads, -1).transpose(0, 2, 1, 3)

    x = t["wte.weight"][tokens] + t["wpe.weight"][:length]
    causal = np.tril(np.ones((length, length), bool))
    for i in range(hf["n_layer"]):
        h = f"h.{i}"
        q, k, v = map(split, np.split(norm(x, h + ".ln_1") @ t[h + ".attn.c_attn.weight"] + t[h + ".attn.c_attn.bias"],
                                      3, axis=-1))
        s = np.where(causal, q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        o = (p / p.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = x + o @ t[h + ".attn.c_proj.weight"] + t[h + ".attn.c_proj.bias"]
        a = norm(x, h + ".ln_2") @ t[h + ".mlp.c_fc.weight"] + t[h + ".mlp.c_fc.bias"]
        a = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
        x = x + a @ t[h + ".mlp.c_proj.weight"] + t[h + ".mlp.c_proj.bias"]
    return norm(x, "ln_f") @ t["wte.weight"].T


def write_gpt2(directory, hf: dict, tensors: dict[str, np.ndarray], shards: int = 1) -> str:
    """A checkpoint directory as Hugging Face writes it (safetensors' own writer)."""
    from safetensors.numpy import save_file
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf))
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"))
        return str(directory)
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        save_file({n: tensors[n] for n in part}, str(directory / file))
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return str(directory)


def fresh_params(model_cfg, vocab: int, seq_len: int, mesh: jax.sharding.Mesh):
    """(graphdef, params) of a new model on `mesh`: its shapes and shardings, values drawn in
    numpy (a compile per tensor, as nnx's eager init costs, is minutes on 2 cores over a test file)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, vocab, seq_len, rngs=nnx.Rngs(1))),
                                   nnx.Param)
    rng = np.random.default_rng(1)
    return graphdef, jax.tree.map(lambda a: jax.device_put(rng.normal(0, 0.02, a.shape).astype(a.dtype),
                                                           NamedSharding(mesh, a.sharding.spec)), abstract)


def igpt_logits(model_cfg, vocab: int, seq_len: int, init, donor_source: str, tokens: np.ndarray,
                devices: int = 1) -> np.ndarray:
    """Logits of the model that `init` (mode, growth) builds from the donor, on `devices` devices."""
    m = make_mesh(devices)
    with on_mesh(m, sharding.DEFAULT_RULES):
        graphdef, fresh = fresh_params(model_cfg, vocab, seq_len, m)
        donor = donors.load(donor_source, sharding.replicated(m)) if donor_source else None
        params = transfer_init.initialize(init, fresh, donor, seed=0, vocab=vocab)
        batch = sharding.put_batch(tokens.astype(np.int32), m, sharding.DEFAULT_RULES)
        return np.asarray(jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, batch))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return write_gpt2(tmp_path_factory.mktemp("gpt2"), GPT2, gpt2_tensors(GPT2))


def _tokens(vocab: int, bos: int, seed: int = 0, batch: int = 4, length: int = 24) -> np.ndarray:
    rows = np.random.default_rng(seed).integers(0, vocab, (batch, length))
    rows[:, 0] = bos
    return rows


# ---------------------------------------------------------------------------------------------
# Import


def test_gpt2_import_gives_gpt2s_logits_on_8_devices(gpt2_dir, tmp_path, capsys):
    """hf:DIR directly, and igpt-import's orbax donor, on a mesh that shards every weight:
    the logits of GPT-2's own forward pass, igpt's BOS (id vocab_size) reading as <|endoftext|>."""
    from igpt.commands import import_hf
    vocab = GPT2["vocab_size"]
    tokens = _tokens(vocab, bos=vocab)
    want = numpy_gpt2_logits(gpt2_tensors(GPT2), GPT2, np.where(tokens == vocab, GPT2["bos_token_id"], tokens))
    assert np.abs(want).max() > 1  # logits of a size where 1e-4 is a real check
    cfg = hf_gpt2.model_config(gpt2_dir)
    assert (cfg.bias, cfg.tie_embeddings, cfg.norm_eps, cfg.mlp_ratio) == (True, True, 1e-5, 4)
    init = transfer_init.init_config("full", f"hf:{gpt2_dir}")
    got = igpt_logits(cfg, vocab, GPT2["n_positions"], init, init.source, tokens, devices=8)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

    assert import_hf.main([gpt2_dir, "--out", str(tmp_path / "donor")]) == 0
    assert f"--config.init.source={tmp_path / 'donor'}" in capsys.readouterr().out
    init = transfer_init.init_config("frozen_body", str(tmp_path / "donor"))
    np.testing.assert_array_equal(igpt_logits(cfg, vocab, GPT2["n_positions"], init, init.source, tokens, 8), got)
    assert donors.vocab_size(str(tmp_path / "donor")) == vocab == donors.vocab_size(f"hf:{gpt2_dir}")


def test_imported_params_compute_gpt2_in_igpts_layout(gpt2_dir):
    """The checker the growth tests use (numpy, igpt's layout) agrees with GPT-2's definition."""
    vocab = GPT2["vocab_size"]
    tokens = _tokens(vocab, bos=GPT2["bos_token_id"])
    params, hf = hf_gpt2.load(gpt2_dir)
    np.testing.assert_allclose(numpy_igpt_logits(growth.flatten(params), tokens, vocab, 1e-5),
                               numpy_gpt2_logits(gpt2_tensors(GPT2), GPT2, tokens), atol=1e-9, rtol=0)
    assert transfer_init.token_offset(transfer_init.init_config("grow_vocab", f"hf:{gpt2_dir}")) == vocab
    assert transfer_init.token_offset(transfer_init.init_config("full", f"hf:{gpt2_dir}")) == 0


@pytest.mark.parametrize("mode", SOURCE_MODES)
def test_hf_source_initialises_every_transfer_mode(gpt2_dir, mode):
    donor = donors.load(f"hf:{gpt2_dir}", jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    fresh = jax.tree.map(lambda a: a * 0 + 7.0, donor.params)  # a target of the donor's shapes
    init = transfer_init.init_config(mode, f"hf:{gpt2_dir}", layers=(1,))
    got = growth.flatten(transfer_init.initialize(init, fresh, donor, seed=0, vocab=300))
    want = growth.flatten(donor.params)
    assert got.keys() == want.keys()
    body = [k for k in want if k[0] == "blocks"]
    if mode == "stats_init":  # drawn from each tensor's statistics: not the donor's values, nor the fresh ones
        assert all(not np.array_equal(got[k], want[k]) and not np.all(got[k] == 7.0) for k in body)
    else:
        assert all(np.array_equal(got[k], want[k]) for k in body)


def test_sharded_checkpoint_and_half_precision_read_like_one_file(gpt2_dir, tmp_path):
    tensors = gpt2_tensors(GPT2)
    sharded = write_gpt2(tmp_path / "sharded", GPT2, tensors, shards=3)
    whole, parts = hf_gpt2.read_weights(gpt2_dir), hf_gpt2.read_weights(sharded)
    assert whole.keys() == parts.keys() == tensors.keys()
    assert all(np.array_equal(whole[k], tensors[k]) and np.array_equal(parts[k], tensors[k]) for k in tensors)
    from safetensors.numpy import save_file
    half = {"a": np.arange(6, dtype=np.float16).reshape(2, 3) / 4, "b": np.array([-1, 7], np.int64)}
    save_file(half, str(tmp_path / "half.safetensors"))
    back = read_safetensors(tmp_path / "half.safetensors")
    assert all(back[k].dtype == half[k].dtype and np.array_equal(back[k], half[k]) for k in half)
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(TransferError, match="is not a safetensors file"):
        read_safetensors(tmp_path / "garbage.safetensors")


@pytest.mark.parametrize("change, message", [
    (dict(model_type="llama", architectures=["LlamaForCausalLM"]), "model_type 'llama'"),
    (dict(activation_function="relu"), "activation_function 'relu'"),
    (dict(n_inner=96), "n_inner 96 not a multiple"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
])
def test_an_architecture_igpt_cannot_run_is_refused_in_one_line(tmp_path, capsys, change, message):
    from igpt.commands import import_hf
    directory = write_gpt2(tmp_path / "other", dict(GPT2, **change), {"wte.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(SystemExit) as exit_:
        import_hf.main([directory, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and err.startswith("igpt: error:") and message in err and "\n" not in err


def test_weights_that_do_not_match_config_json_are_refused(tmp_path):
    directory = write_gpt2(tmp_path / "short", GPT2, gpt2_tensors(dict(GPT2, n_layer=1)))
    with pytest.raises(TransferError, match="no tensor 'h.1."):
        hf_gpt2.load(directory)


def test_the_mlps_hand_written_backward_takes_gpt2s_bias_too():
    from igpt.model import gelu_mlp
    rng = np.random.default_rng(0)
    x, dy = rng.normal(0, 1, (2, 2, 16, 8)).astype(np.float32)
    w_in, w_out, b_in = (rng.normal(0, 0.3, shape).astype(np.float32) for shape in ((8, 32), (32, 8), (32,)))
    args = (x, w_in, w_out, b_in)

    def plain(x, w_in, w_out, b_in):
        return jax.nn.gelu(x @ w_in + b_in) @ w_out

    def value_and_grads(f):
        return jax.jit(jax.value_and_grad(lambda a: (f(*a) * dy).sum()))(args)

    (out, grads), (ref_out, ref_grads) = value_and_grads(gelu_mlp), value_and_grads(plain)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Vocabulary growth


def test_grow_vocab_keeps_the_donors_logits_on_its_own_tokens(gpt2_dir):
    vocab, grown = GPT2["vocab_size"], GPT2["vocab_size"] + 40
    tokens = _tokens(vocab, bos=GPT2["bos_token_id"])
    donor = numpy_gpt2_logits(gpt2_tensors(GPT2), GPT2, tokens)
    cfg = hf_gpt2.model_config(gpt2_dir)
    init = transfer_init.init_config("grow_vocab", f"hf:{gpt2_dir}")
    got = igpt_logits(cfg, grown, GPT2["n_positions"], init, init.source,
                      np.where(tokens == GPT2["bos_token_id"], grown, tokens))  # BOS: the grown model's
    assert got.shape[-1] == grown
    np.testing.assert_allclose(got[..., :vocab], donor, atol=1e-4, rtol=0)
    # mean_resizing: each new token's logit is (nearly) the mean of the donor's logits
    np.testing.assert_allclose(got[..., vocab:], np.repeat(donor.mean(-1, keepdims=True), 40, -1), atol=1e-3)


def test_new_rows_come_from_the_donor_rows_mean_and_covariance_or_the_fresh_init():
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 1, (4000, 3)) @ np.array([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]]) + [1.0, -2.0, 3.0]
    new = growth.mean_resized_rows(rows, 5000, np.random.default_rng(1))
    np.testing.assert_allclose(new.mean(0), rows.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.cov(new.T) / 1e-9, np.cov(rows.T), rtol=0.1, atol=0.05)
    donor = {growth.EMBED: rows[:130].astype(np.float32), growth.HEAD: rows[:128].T.astype(np.float32)}
    fresh = {growth.EMBED: np.ones((256, 3), np.float32), growth.HEAD: np.full((3, 140), 2.0, np.float32)}
    out = growth.grow_vocabulary(donor, fresh, donor_vocab=128, vocab=140, method="random", seed=0)
    np.testing.assert_array_equal(out[growth.EMBED][:128], donor[growth.EMBED][:128])
    np.testing.assert_array_equal(out[growth.EMBED][128:140], 1.0)
    np.testing.assert_array_equal(out[growth.EMBED][140], donor[growth.EMBED][128])  # the donor's BOS row
    np.testing.assert_array_equal(out[growth.HEAD][:, :128], donor[growth.HEAD])
    np.testing.assert_array_equal(out[growth.HEAD][:, 128:], 2.0)


def test_grow_vocab_is_an_arm_and_a_smaller_model_vocabulary_is_refused():
    arm = parse_arm("prose/grow_vocab", ["prose"], num_layers=2)
    assert (arm.source, arm.mode) == ("prose", "grow_vocab")
    donor = {growth.EMBED: np.zeros((128, 3), np.float32)}
    with pytest.raises(TransferError, match="smaller than the donor's"):
        growth.grow_vocabulary(donor, {growth.EMBED: np.zeros((128, 3))}, 100, 90, "mean", 0)


# ---------------------------------------------------------------------------------------------
# Width and depth growth


def _gpt2_params(**change) -> growth.Flat:
    hf = dict(GPT2, **change)
    return growth.flatten(hf_gpt2.to_params(gpt2_tensors(hf), hf))


def _igpt_params(d=32, heads=4, layers=2, vocab=50, seed=0) -> growth.Flat:
    """The default architecture (no biases, untied head), random weights and norms."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)  # noqa: E731
    flat = {growth.EMBED: w(128, d), growth.POS: w(24, d), growth.HEAD: w(d, vocab),
            ("final_norm", "scale", "value"): 1 + w(d), ("final_norm", "bias", "value"): w(d)}
    for i in range(layers):
        b = ("blocks", str(i))
        flat.update({b + ("norm1", "scale", "value"): 1 + w(d), b + ("norm1", "bias", "value"): w(d),
                     b + ("norm2", "scale", "value"): 1 + w(d), b + ("norm2", "bias", "value"): w(d),
                     **{b + ("attn", n, "value"): w(d, heads, d // heads) for n in ("wq", "wk", "wv")},
                     b + ("attn", "wo", "value"): w(heads, d // heads, d),
                     b + ("mlp", "w_in", "value"): w(d, 4 * d), b + ("mlp", "w_out", "value"): w(4 * d, d)})
    return flat


def _shapes(d: int, heads: int, head_dim: int, mlp: int, layers: int, like: growth.Flat) -> dict:
    """Target shapes: `like`'s non-block params, blocks of the given sizes (growth reads these)."""
    out = {k: v.shape for k, v in like.items() if k[0] != "blocks"}
    for i in range(layers):
        out[("blocks", str(i), "attn", "wq", "value")] = (d, heads, head_dim)
        out[("blocks", str(i), "mlp", "w_in", "value")] = (d, mlp)
    return out


@pytest.mark.parametrize("arch, shape", [
    ("gpt2", (192, 6, 32, 576, 3)),   # width x3, 4 -> 6 heads (two copied), head size x2, MLP x2.25, +1 block
    ("gpt2", (128, 8, 16, 512, 5)),   # width x2, heads x2, 2 -> 5 blocks
    ("igpt", (64, 4, 16, 200, 4)),    # untied, no biases: head size x2, MLP 128 -> 200, depth x2
])
def test_width_and_depth_growth_keeps_the_models_outputs(arch, shape):
    donor = _gpt2_params() if arch == "gpt2" else _igpt_params()
    vocab, eps = (GPT2["vocab_size"], 1e-5) if arch == "gpt2" else (50, 1e-6)
    tokens = _tokens(vocab, bos=vocab)
    grown = growth.grow(donor, _shapes(*shape, like=donor), spread=0.1, seed=0)
    assert grown[("blocks", "0", "attn", "wq", "value")].shape == shape[:3]
    assert len({k[1] for k in grown if k[0] == "blocks"}) == shape[4]
    np.testing.assert_allclose(numpy_igpt_logits(grown, tokens, vocab, eps),
                               numpy_igpt_logits(donor, tokens, vocab, eps), atol=1e-5, rtol=0)


def test_growth_splits_outgoing_weights_unevenly_between_copies_and_zeroes_new_blocks():
    donor = _igpt_params(d=8, heads=2, layers=1)
    grown = growth.grow(donor, _shapes(16, 2, 8, 64, 2, like=donor), spread=0.1, seed=0)
    w_out, split = donor[("blocks", "0", "mlp", "w_out", "value")], grown[("blocks", "0", "mlp", "w_out", "value")]
    np.testing.assert_allclose(split[:32] + split[32:], w_out[:, np.arange(16) % 8], atol=1e-6)
    assert not np.allclose(split[:32], split[32:])  # copies train apart
    for name in growth.OUTPUT_PROJECTIONS:
        kind = "attn" if name in ("wo", "bo") else "mlp"
        if ("blocks", "0", kind, name, "value") in donor:
            assert np.any(grown[("blocks", "0", kind, name, "value")])
            assert not np.any(grown[("blocks", "1", kind, name, "value")])  # the new block adds nothing


def test_growth_refuses_to_shrink_or_to_grow_width_unevenly():
    donor = _igpt_params(d=8, heads=2, layers=1)
    with pytest.raises(TransferError, match="only grows: the donor's number of heads is 2"):
        growth.grow(donor, _shapes(8, 1, 8, 32, 1, like=donor), 0.1, 0)
    with pytest.raises(TransferError, match="width 12 is not a multiple of the donor's 8"):
        growth.grow(donor, _shapes(12, 2, 6, 32, 1, like=donor), 0.1, 0)
    with pytest.raises(TransferError, match="only grows: the donor has 2 blocks, the model 1"):
        growth.grow(_igpt_params(d=8, heads=2, layers=2), _shapes(8, 2, 4, 32, 1, like=donor), 0.1, 0)


# ---------------------------------------------------------------------------------------------
# Slow: against transformers' PyTorch GPT-2, and through real models and a training run


@pytest.fixture(scope="module")
def transformers_gpt2(tmp_path_factory):
    """A GPT-2-shaped model that transformers creates with random weights (norms and biases
    perturbed off 1 and 0) and saves as safetensors; its logits on BOS-led tokens."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(**{k: v for k, v in GPT2.items() if k not in ("model_type", "architectures")})
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("transformers_gpt2")
    model.save_pretrained(directory)
    tokens = _tokens(GPT2["vocab_size"], bos=GPT2["bos_token_id"])
    with torch.no_grad():
        logits = model(torch.tensor(tokens)).logits.numpy()
    return str(directory), tokens, logits


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 8])
def test_import_matches_transformers_pytorch_forward(transformers_gpt2, devices):
    directory, tokens, want = transformers_gpt2
    vocab = GPT2["vocab_size"]
    init = transfer_init.init_config("full", f"hf:{directory}")
    got = igpt_logits(hf_gpt2.model_config(directory), vocab, GPT2["n_positions"], init, init.source,
                      np.where(tokens == GPT2["bos_token_id"], vocab, tokens), devices)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "grow_vocab"])
def test_growth_through_init_keeps_a_real_models_logits(gpt2_dir, mode):
    """init.grow=True in a transfer mode: the wider, deeper jax model computes the donor's logits."""
    vocab = GPT2["vocab_size"]
    grown_vocab = vocab + (16 if mode == "grow_vocab" else 0)
    tokens = _tokens(vocab, bos=vocab)
    source = f"hf:{gpt2_dir}"
    want = igpt_logits(hf_gpt2.model_config(gpt2_dir), vocab, 64, transfer_init.init_config("full", source),
                       source, tokens)
    big = hf_gpt2.model_config(gpt2_dir, width=192, num_heads=6, mlp_ratio=3, num_layers=3)
    init = transfer_init.init_config(mode, source, grow=True)
    got = igpt_logits(big, grown_vocab, 64, init, source, np.where(tokens == vocab, grown_vocab, tokens))
    np.testing.assert_allclose(got[..., :vocab], want, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_grow_vocab_trains_image_tokens_after_a_gpt2_donors_tokens(gpt2_dir, data_dir, tmp_path):
    """igpt-train's task under grow_vocab from hf:DIR: the model reads the donor's 300 tokens,
    then the data's 16 gray levels as ids 300..315, BOS 316; it trains and checkpoints."""
    from igpt.gpt import GPTTask, train
    from igpt.training import checkpoint
    from igpt.training.rundir import RunDir
    from trainer_fixtures import tiny_config, train_losses
    cfg = tiny_config(data_dir, steps=4)
    cfg.model = hf_gpt2.model_config(gpt2_dir)
    cfg.init = transfer_init.init_config("grow_vocab", f"hf:{gpt2_dir}")
    task = GPTTask(cfg)
    task.setup(RunDir.at(tmp_path / "probe").prepare(), make_mesh(8))
    rows = task.rows(0)
    assert task.vocab == 316 and rows.min() >= 300 and rows.max() < 316
    train(cfg, tmp_path / "run")
    params, meta = checkpoint.restore_params(tmp_path / "run", jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    assert meta["vocab"] == 316 and "head" not in params  # tied, as the donor
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 4 and all(np.isfinite(list(losses.values())))


# ---------------------------------------------------------------------------------------------
# Shipped donors


@pytest.mark.parametrize("name", ["prose", pytest.param("music", marks=pytest.mark.slow)])  # music: ~20 s to prepare
def test_a_shipped_donors_loss_on_its_own_data_is_its_recorded_figure(name, data_dir):
    """The shipped params, tokenizer and config reproduce donor.json's loss on the first
    validation sequences, and that loss shows a model that has learned its modality."""
    from igpt.transfer.donors.ship import eval_loss
    info = shipped.info(name)
    check = info["check"]
    assert eval_loss(name, check["split"], check["sequences"], data_dir) == pytest.approx(check["loss"], abs=1e-4)
    assert check["loss"] < 0.7 * np.log(info["vocab"])  # well below a uniform guess over its tokens


@pytest.mark.parametrize("mode", SOURCE_MODES)
def test_a_shipped_donor_initialises_every_transfer_mode(mode):
    donor = donors.load("shipped:prose", jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    assert donor.vocab == donors.vocab_size("shipped:prose") == 256
    fresh = jax.tree.map(lambda a: a * 0 + 7.0, donor.params)  # a target of the donor's shapes
    init = transfer_init.init_config(mode, "shipped:prose", layers=(1,))
    got = growth.flatten(transfer_init.initialize(init, fresh, donor, seed=0, vocab=256))
    want = growth.flatten(donor.params)
    assert got.keys() == want.keys()
    body = [k for k in want if k[0] == "blocks"]
    if mode == "stats_init":
        assert all(not np.array_equal(got[k], want[k]) and not np.all(got[k] == 7.0) for k in body)
    else:
        assert all(np.array_equal(got[k], want[k]) for k in body)


@pytest.mark.parametrize("name", ["prose", "music"])
def test_a_shipped_donors_pretraining_flops_are_its_tokens_times_its_models_flops_per_token(name):
    from igpt.model import flops_per_token
    from igpt.transfer.donors.ship import run_config
    info, cfg = shipped.info(name), run_config(name)
    per_token = flops_per_token(cfg.model, info["vocab"], info["seq_len"])
    assert info["tokens_seen"] == info["steps"] * cfg.train.global_batch * cfg.data.seq_len
    assert donors.pretraining_flops(f"shipped:{name}") == info["tokens_seen"] * per_token > 0
    assert donors.pretraining_flops("hf:/any/gpt2") is None  # an imported model's pretraining is not known


def test_an_unknown_shipped_donor_is_refused_naming_those_that_ship():
    with pytest.raises(TransferError, match=r"no shipped donor 'poetry'; igpt ships \['music', 'prose'\]"):
        donors.vocab_size("shipped:poetry")


def test_igpts_safetensors_writer_is_read_by_safetensors_own_reader(tmp_path):
    from safetensors.numpy import load_file
    from igpt.transfer.donors.safetensors_numpy import write_safetensors
    tensors = {"blocks/0/attn/wq/value": np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2],
               "scalar": np.array(3, np.int64), "big_endian": np.arange(3, dtype=">f4")}
    write_safetensors(tmp_path / "x.safetensors", tensors)
    for read in (load_file(tmp_path / "x.safetensors"), read_safetensors(tmp_path / "x.safetensors")):
        assert read.keys() == tensors.keys()
        for name, want in tensors.items():
            np.testing.assert_array_equal(read[name], want)
            assert read[name].shape == want.shape
