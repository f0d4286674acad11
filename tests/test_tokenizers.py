"""Tokenizers on the data that ships offline: scikit-image photos, Python's pydoc topics, audio."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from einops import rearrange
from skimage import data, transform

from igpt.tokenizers import (ByteTokenizer, GrayscaleTokenizer, MulawTokenizer, PaletteTokenizer, Tokenizer,
                             TokenizerError, fit_palette, from_spec, load)
from igpt.tokenizers.palette import ENCODE_CHUNK

FIT_PHOTOS = ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
HELD_OUT_PHOTOS = ("chelsea", "retina", "motorcycle")


def _photo(name: str) -> np.ndarray:
    return data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()


def _random_crops(image: np.ndarray, n: int, rng: np.random.Generator, res: int = 32) -> np.ndarray:
    """n square crops of 32..160 px at random places, downscaled to res x res like training images."""
    h, w = image.shape[:2]
    crops = []
    for _ in range(n):
        side = int(rng.integers(res, 161))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        small = transform.resize(image[y:y + side, x:x + side], (res, res), anti_aliasing=True, preserve_range=True)
        crops.append(np.clip(np.rint(small), 0, 255).astype(np.uint8))
    return np.stack(crops)


def _psnr(reference: np.ndarray, approx: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - approx.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def _snr_db(signal: np.ndarray, approx: np.ndarray) -> float:
    signal = signal.astype(np.float64)
    return 10 * math.log10(np.sum(signal**2) / np.sum((signal - approx) ** 2))


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fit": np.concatenate([_random_crops(_photo(n), 64, rng) for n in FIT_PHOTOS]),
        "held_out": np.concatenate([_random_crops(_photo(n), 64, rng) for n in HELD_OUT_PHOTOS]),
    }


@pytest.fixture(scope="module")
def palette512(crops) -> PaletteTokenizer:
    return PaletteTokenizer.fit(crops["fit"], k=512, seed=0, max_pixels=50_000, iters=10)


# ---- palette ---------------------------------------------------------------------------------

def test_palette_beats_uniform_8x8x8_grid_on_held_out_photos(crops, palette512):
    held_out = crops["held_out"]
    palette_psnr = _psnr(held_out, palette512.decode(palette512.encode(held_out)))
    grid = (np.floor(held_out / 32.0) + 0.5) * 32.0 - 0.5  # centre of each 32-value bin per channel
    grid_psnr = _psnr(held_out, grid)
    print(f"\nheld-out 32x32 crops of {', '.join(HELD_OUT_PHOTOS)}: palette-512 PSNR {palette_psnr:.2f} dB, "
          f"uniform 8x8x8 grid PSNR {grid_psnr:.2f} dB")
    assert palette_psnr >= grid_psnr + 1.0


def test_palette_fit_is_deterministic_for_a_seed_and_any_chunk_size(crops):
    pixels = crops["fit"][:40]

    def fit(seed, chunk=1024):                                # 5000 pixels: the last chunk is padded
        return fit_palette(pixels, k=16, seed=seed, iters=5, max_pixels=5_000, chunk=chunk)

    first = fit(0)
    assert first.shape == (16, 3) and first.dtype == np.float32
    assert np.all(np.abs(first) <= 1.0)
    np.testing.assert_array_equal(first, fit(0))
    np.testing.assert_allclose(first, fit(0, chunk=5_000), atol=1e-5)
    assert not np.array_equal(first, fit(1))


def test_palette_encode_is_the_nearest_centre_in_raster_order(crops, palette512):
    images = crops["held_out"][:17]                            # 17 * 1024 px: two encode chunks
    assert ENCODE_CHUNK < images.shape[0] * 32 * 32 < 2 * ENCODE_CHUNK
    tokens = palette512.encode(images)
    assert tokens.shape == (17, 32 * 32) and tokens.dtype == np.int32
    pixels = rearrange(images, "n h w rgb -> n (h w) rgb").astype(np.float64) / 127.5 - 1.0
    centres = palette512.centres.astype(np.float64)
    dist = (pixels**2).sum(-1)[..., None] + (centres**2).sum(-1) - 2 * pixels @ centres.T
    chosen = np.take_along_axis(dist, tokens[..., None], axis=-1)[..., 0]
    assert np.all(chosen <= dist.min(axis=-1) + 1e-5)


def test_palette_decode_gives_centre_colours_for_flat_or_grid_tokens(crops, palette512):
    tokens = palette512.encode(crops["held_out"][:4])
    images = palette512.decode(tokens)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, palette512.decode(rearrange(tokens, "n (h w) -> n h w", h=32)))
    centre = palette512.centres[tokens[0, 0]]
    np.testing.assert_array_equal(images[0, 0, 0], np.clip(np.rint(127.5 * (centre + 1)), 0, 255))


def test_palette_with_fewer_colours_than_k_reproduces_them_exactly():
    colours = np.array([[255, 0, 0], [0, 128, 255], [20, 20, 20]], np.uint8)
    images = colours[np.random.default_rng(0).integers(0, 3, (2, 8, 8))]
    tok = PaletteTokenizer.fit(images, k=8, seed=0)
    assert np.isfinite(tok.centres).all()
    np.testing.assert_array_equal(tok.decode(tok.encode(images)), images)


def test_palette_save_load_is_exact(tmp_path, crops, palette512):
    palette512.save(tmp_path / "palette")
    loaded = PaletteTokenizer.load(tmp_path / "palette")
    assert loaded.centres.dtype == np.float32
    np.testing.assert_array_equal(loaded.centres, palette512.centres)
    assert isinstance(load(tmp_path / "palette"), PaletteTokenizer)
    images = crops["held_out"][:2]
    np.testing.assert_array_equal(loaded.encode(images), palette512.encode(images))


@pytest.mark.parametrize("images, words", [
    (np.zeros((2, 8, 8, 3), np.float32), ["float32", "uint8"]),
    (np.zeros((8, 8), np.uint8), ["[8, 8]", "[N, H, W, 3]"]),
    (np.zeros((2, 8, 8, 4), np.uint8), ["[2, 8, 8, 4]", "[N, H, W, 3]"]),
])
def test_palette_rejects_images_that_are_not_uint8_rgb_batches(palette512, images, words):
    with pytest.raises(TokenizerError) as err:
        palette512.encode(images)
    assert all(w in str(err.value) for w in words), err.value


def test_palette_decode_rejects_out_of_range_and_non_square_tokens(palette512):
    with pytest.raises(TokenizerError, match=r"\[0, 512\]"):
        palette512.decode(np.array([[0, 1, 2, 512]]))
    with pytest.raises(TokenizerError, match="not a square"):
        palette512.decode(np.zeros((1, 10), np.int32))
    with pytest.raises(TokenizerError, match="fewer|at least"):
        fit_palette(np.zeros((10, 3), np.uint8), k=16)


# ---- mu-law ----------------------------------------------------------------------------------

def _wavenet_token(x: float, mu: int = 255) -> int:
    f = math.copysign(math.log(1 + mu * abs(x)) / math.log(1 + mu), x)
    return int((f + 1) / 2 * mu + 0.5)


def test_mulaw_matches_wavenet_formula():
    tok = MulawTokenizer()
    xs = [0.0, 1.0, -1.0, 0.5, -0.25, 0.01, -0.003]
    expected = [_wavenet_token(x) for x in xs]
    assert expected[:3] == [128, 255, 0]
    np.testing.assert_array_equal(tok.encode(np.array(xs)), expected)
    assert tok.vocab_size == 256


def test_mulaw_decode_inverts_every_code():
    tok = MulawTokenizer()
    codes = np.arange(256)
    values = tok.decode(codes)
    assert values.dtype == np.float32
    assert values[0] == -1.0 and values[255] == 1.0
    y = 2 * 128 / 255 - 1
    assert values[128] == pytest.approx(math.copysign((256**abs(y) - 1) / 255, y), rel=1e-6)
    np.testing.assert_array_equal(tok.encode(values), codes)


def _decaying_harmonics(seconds: float = 2.0, sample_rate: int = 8000) -> np.ndarray:
    """Four plucked notes, each a sum of 6 harmonics with exponential decay."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = np.zeros_like(t)
    for i, f0 in enumerate([220.0, 277.2, 329.6, 440.0]):
        start = i * seconds / 4
        tau = np.clip(t - start, 0, None)
        note = sum(np.sin(2 * np.pi * f0 * h * tau) / h for h in range(1, 7))
        out += (t >= start) * note * np.exp(-3.0 * tau)
    return (0.9 * out / np.abs(out).max()).astype(np.float32)


def test_mulaw_snr_on_decaying_harmonics():
    audio = _decaying_harmonics()
    tok = MulawTokenizer()
    snr = _snr_db(audio, tok.decode(tok.encode(audio)))
    print(f"\nmu-law 256 SNR on decaying harmonics: {snr:.1f} dB")
    assert snr >= 35.0


def test_mulaw_snr_on_shipped_music():
    from igpt.data import music
    audio = music.synthesize_music(seconds=2.0, sample_rate=8000, seed=0)
    tok = MulawTokenizer()
    batch = audio[None]
    snr = _snr_db(batch, tok.decode(tok.encode(batch)))
    print(f"\nmu-law 256 SNR on synthesize_music: {snr:.1f} dB")
    assert snr >= 35.0


def test_mulaw_clips_float_overshoot_but_rejects_real_clipping():
    tok = MulawTokenizer()
    assert tok.encode(np.array([1.0 + 1e-7, -1.0 - 1e-7])).tolist() == [255, 0]
    with pytest.raises(TokenizerError, match=r"1\.5.*normalise by the peak"):
        tok.encode(np.array([[0.1, -1.5, 0.2]]))


def test_mulaw_rejects_non_finite_int_and_badly_shaped_audio():
    tok = MulawTokenizer()
    audio = np.zeros((2, 100), np.float32)
    audio[1, 7] = np.nan
    audio[1, 9] = np.inf
    with pytest.raises(TokenizerError, match=r"2 NaN/inf .*index \(1, 7\)"):
        tok.encode(audio)
    with pytest.raises(TokenizerError, match="int16.*32768"):
        tok.encode(np.zeros(10, np.int16))
    with pytest.raises(TokenizerError, match=r"\[2, 3, 4\]"):
        tok.encode(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(TokenizerError, match=r"\[0, 256\)"):
        tok.decode(np.array([256]))
    with pytest.raises(TokenizerError, match="mu=0"):
        MulawTokenizer(mu=0)


# ---- bytes -----------------------------------------------------------------------------------

def test_bytes_round_trip_arbitrary_utf8():
    import pydoc_data.topics

    prose = "\n".join(pydoc_data.topics.topics.values())
    samples = ["", "plain ASCII", "emoji 👋🏽🚀 and flags 🇳🇿", "漢字かな交じり文, 한국어, Ελληνικά",
               "combining e\u0301 and NUL \x00 byte", prose]
    tok = ByteTokenizer()
    for text in samples:
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.ndim == 1
        assert ids.tolist() == list(text.encode("utf-8"))
        assert tok.decode(ids) == text
    assert len(prose) > 400_000
    batch = tok.encode(samples[:3])
    assert isinstance(batch, list) and [tok.decode(b) for b in batch] == samples[:3]


def test_bytes_decode_replaces_a_cut_character():
    tok = ByteTokenizer()
    ids = tok.encode("naïve 🚀")
    assert tok.decode(ids[:-1]) == "naïve \ufffd"
    assert tok.decode(np.stack([ids[:3], ids[1:4]])) == ["na\ufffd", "aï"]


@pytest.mark.parametrize("bad, words", [
    (b"raw bytes", "bytes"), (42, "int"), (["ok", 3], "list"), ("lone \ud800 surrogate", "surrogate"),
])
def test_bytes_rejects_what_is_not_text(bad, words):
    with pytest.raises(TokenizerError, match=words):
        ByteTokenizer().encode(bad)


def test_bytes_decode_rejects_bad_ids():
    with pytest.raises(TokenizerError, match="outside"):
        ByteTokenizer().decode(np.array([65, 300]))
    with pytest.raises(TokenizerError, match="float"):
        ByteTokenizer().decode(np.array([65.0]))


# ---- grayscale -------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [2, 4, 16, 64, 256])
def test_gray_round_trip_on_camera_is_within_half_a_level(levels):
    camera = data.camera()[None]
    tok = GrayscaleTokenizer(levels)
    tokens = tok.encode(camera)
    assert tokens.shape == (1, camera.size) and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() == levels - 1
    back = tok.decode(tokens)
    assert back.shape == camera.shape and back.dtype == np.uint8
    error = np.abs(back.astype(int) - camera.astype(int)).max()
    assert error <= 128 / levels


def test_gray_every_level_count_and_value():
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    for levels in range(2, 257):
        tok = GrayscaleTokenizer(levels)
        tokens = tok.encode(values)[0]
        assert np.all(np.diff(tokens) >= 0) and tokens[0] == 0 and tokens[-1] == levels - 1
        error = np.abs(tok.decode(tokens[None]).astype(int).ravel() - np.arange(256))
        assert error.max() <= math.ceil(128 / levels), levels


def test_gray_converts_rgb_with_bt601_luma():
    tok = GrayscaleTokenizer(256)
    rgb = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]]], np.uint8)
    assert tok.decode(tok.encode(rgb).reshape(1, 1, 4)).ravel().tolist() == [76, 150, 29, 255]
    camera = data.camera()[None]
    np.testing.assert_array_equal(tok.encode(camera[..., None]), tok.encode(camera))


def test_gray_rejects_bad_levels_and_images():
    for levels in (1, 257, "16"):
        with pytest.raises(TokenizerError, match="2 to 256"):
            GrayscaleTokenizer(levels)
    with pytest.raises(TokenizerError, match=r"\[512, 512\].*images\[None\]"):
        GrayscaleTokenizer(16).encode(data.camera())
    with pytest.raises(TokenizerError, match="float64.*uint8"):
        GrayscaleTokenizer(16).encode(data.camera()[None] / 255.0)


# ---- specs and directories -------------------------------------------------------------------

def test_from_spec_builds_each_kind(crops):
    def no_images():
        raise AssertionError("only palette specs may load images")

    gray, mulaw, text = from_spec("gray:16", no_images), from_spec("mulaw:256", no_images), from_spec("bytes")
    assert (type(gray), gray.vocab_size) == (GrayscaleTokenizer, 16)
    assert (type(mulaw), mulaw.mu, mulaw.vocab_size) == (MulawTokenizer, 255, 256)
    assert (type(text), text.vocab_size) == (ByteTokenizer, 256)
    palette = from_spec("palette:8", fit_images=lambda: crops["fit"][:8])
    assert (type(palette), palette.vocab_size) == (PaletteTokenizer, 8)
    assert all(isinstance(t, Tokenizer) for t in (gray, mulaw, text, palette))


def test_from_spec_and_load_read_saved_directories(tmp_path):
    for tok in (GrayscaleTokenizer(16), MulawTokenizer(255), ByteTokenizer()):
        tok.save(tmp_path / tok.kind)
        again = from_spec(str(tmp_path / tok.kind))
        assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
        assert type(load(tmp_path / tok.kind)) is type(tok)


def test_loading_a_gray_directory_as_palette_says_so(tmp_path):
    GrayscaleTokenizer(16).save(tmp_path)
    with pytest.raises(TokenizerError, match="holds a 'gray' tokenizer, not 'palette'"):
        PaletteTokenizer.load(tmp_path)
    with pytest.raises(TokenizerError, match="not a tokenizer directory"):
        load(tmp_path / "missing")


@pytest.mark.parametrize("spec, words", [
    ("jpeg:4", "unknown tokenizer spec 'jpeg:4'.*palette:K.*gray:LEVELS.*mulaw:VOCAB.*bytes.*vq:PATH"),
    ("gray:many", "whole number"),
    ("palette:512", "fit_images"),
    ("gray:1", "2 to 256"),
])
def test_from_spec_rejects_bad_specs(spec, words):
    with pytest.raises(TokenizerError, match=words):
        from_spec(spec)


def test_vq_spec_on_a_gray_directory_says_what_it_holds(tmp_path):
    pytest.importorskip("igpt.tokenizers.vq")
    GrayscaleTokenizer(16).save(tmp_path)
    with pytest.raises(TokenizerError, match="'gray'"):
        from_spec(f"vq:{tmp_path}")


def test_a_tokenizer_spec_is_parsed_in_one_place(tmp_path):
    from igpt.tokenizers.base import SAVED, Spec, parse_spec
    assert parse_spec("palette:512") == Spec("palette", "512") and parse_spec("bytes") == Spec("bytes", "")
    assert parse_spec("vq:runs/vq/tokenizer").directory == Path("runs/vq/tokenizer").absolute()
    saved = parse_spec(str(tmp_path))
    assert saved.kind == SAVED and saved.directory == tmp_path
    assert parse_spec("gray:16").directory is None
