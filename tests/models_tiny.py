"""Tiny random-weight models of every architecture the wrappers support, built from configs.

No model hub is reachable here, so tests build each architecture small (hidden size 32, one or
two layers, 32x32 images), with a tokenizer written in memory from a short word list, and save it
with ``save_pretrained`` -- exactly the folder layout a real download has. Tests then register the
folder as a user model by local path and go through the registry and pool like a user would.

Weights are initialised with a large ``initializer_range`` so that different images give
different captions (at the default 0.02 a tiny random model says the same thing for every
image, and a test of batching or ordering could not fail).

:func:`build` saves each model once per directory and reuses it (the tests' session-scoped
fixture points every call at one directory, so the whole suite builds each model once).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Words every tiny tokenizer knows, so random captions read as words rather than bytes.
WORDS: tuple[str, ...] = (
    "a", "the", "dog", "cat", "car", "tree", "red", "small", "large", "on", "in", "under", "above",
    "beach", "sky", "night", "field", "street", "and", "of", "to", "left", "right", "photo",
)
#: Image side (pixels) every tiny vision tower expects.
IMAGE_SIZE = 32
#: How wide the random init is (see the module docstring).
INIT_RANGE = 0.5

#: Architecture name -> (kind, builder function name).
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "blip": ("captioner", "save_blip"),
    "blip2": ("captioner", "save_blip2"),
    "git": ("captioner", "save_git"),
    "vision-encoder-decoder": ("captioner", "save_vision_encoder_decoder"),
    "florence2": ("captioner", "save_florence2"),
    "clip": ("text_embedder", "save_clip"),
    "stable-diffusion": ("text_to_image", "save_stable_diffusion"),
    "llama": ("language_model", "save_llama"),
}


#: Registry architecture -> the tiny folder that serves it, and the defaults it is registered with.
#: (CLIP's text and vision towers both load from the one CLIP folder, as with the real checkpoints.)
TINY_MODELS: dict[str, tuple[str, dict]] = {
    "blip": ("blip", {"max_new_tokens": 8, "num_beams": 1}),
    "blip2": ("blip2", {"max_new_tokens": 8, "num_beams": 1}),
    "git": ("git", {"max_new_tokens": 8, "num_beams": 1}),
    "vision-encoder-decoder": ("vision-encoder-decoder", {"max_new_tokens": 8, "num_beams": 1}),
    "florence2": ("florence2", {"prompt": "<CAPTION>", "max_new_tokens": 8, "num_beams": 1}),
    "clip-text": ("clip", {}),
    "clip-vision": ("clip", {}),
    "stable-diffusion": ("stable-diffusion", {"size": 64, "steps": 2, "guidance": 0.0}),
    "causal-lm": ("llama", {"max_new_tokens": 8, "num_beams": 1}),
}
CAPTIONER_ARCHITECTURES = ("blip", "blip2", "git", "vision-encoder-decoder", "florence2")

_session_dirs: dict[str, Path] = {}


def session_dir(name: str) -> Path:
    """One scratch directory per name for this test process (shared by every test module)."""
    if name not in _session_dirs:
        _session_dirs[name] = Path(tempfile.mkdtemp(prefix=f"cortextual-{name}-"))
        atexit.register(shutil.rmtree, _session_dirs[name], ignore_errors=True)
    return _session_dirs[name]


def tiny_folder(folder_name: str) -> Path:
    """The saved tiny model (``ARCHITECTURES`` key), built once per test process."""
    return build(folder_name, session_dir("tiny-models"))


def tiny_id(architecture: str) -> str:
    return f"tiny/{architecture}"


def register_tiny(architecture: str, **overrides):
    """Add the tiny model for a registry ``architecture`` as a user model by local path -- the
    way a user adds a model -- and return its spec (id ``tiny/<architecture>``)."""
    from backend.models.registry import add_user_model

    folder_name, defaults = TINY_MODELS[architecture]
    kw = dict(architecture=architecture, source=tiny_folder(folder_name), id=tiny_id(architecture),
              defaults=defaults, licence="test")
    kw.update(overrides)
    return add_user_model(**kw)


@pytest.fixture(scope="module")
def tiny_pool():
    """A CPU ModelPool over a model cache where every tiny model is registered by local path.

    ``$CORTEXTUAL_CACHE`` points at that cache for the module's tests, then goes back.
    """
    from backend.models.pool import ModelPool

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORTEXTUAL_CACHE", str(session_dir("model-cache")))
        for architecture in TINY_MODELS:
            register_tiny(architecture)
        yield ModelPool(budget_gb=16, device="cpu")


def build(architecture: str, root: Path) -> Path:
    """The folder of the tiny ``architecture`` model under ``root``, built on first use."""
    folder = Path(root) / architecture
    if not (folder / ".complete").exists():
        import torch

        torch.manual_seed(0)  # the same tiny weights in every session
        folder.mkdir(parents=True, exist_ok=True)
        globals()[ARCHITECTURES[architecture][1]](folder)
        (folder / ".complete").write_text("ok\n")
    return folder


# ------------------------------------------------------------------------------- tokenizers


def _bert_tokenizer():
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    # transformers 5 ignores vocab_file= for BertTokenizer; the vocab dict is what it reads.
    return BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]")


def _byte_level_bpe(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2 style byte-level BPE: every byte is a token and each word of WORDS (with its
    leading space, "Ġ") merges into one token."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab: dict[str, int] = {}
    for token in specials + list(bytes_to_unicode().values()):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        for piece in (word, "Ġ" + word):
            merged = piece[0]
            for ch in piece[1:]:
                if merged + ch not in vocab:
                    merges.append((merged, ch))
                    vocab[merged + ch] = len(vocab)
                merged += ch
    return vocab, merges


def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP style BPE over lowercase letters, with "</w>" marking the end of a word."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab: dict[str, int] = {}
    for token in ["<|startoftext|>", "<|endoftext|>", "!", ".", ","] + letters + [c + "</w>" for c in letters]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        if len(word) < 2:
            continue
        merged = word[0]
        for i, ch in enumerate(word[1:], start=1):
            piece = ch + "</w>" if i == len(word) - 1 else ch
            if merged + piece not in vocab:
                merges.append((merged, piece))
                vocab[merged + piece] = len(vocab)
            merged += piece
    return vocab, merges


def _clip_tokenizer(max_length: int = 32):
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    # Merges as tuples: transformers 5 builds the BPE in memory from these.
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    return tok


def _clip_image_processor(**kwargs):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, **kwargs)


def _vit_kwargs() -> dict:
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=8, initializer_range=INIT_RANGE)


# ----------------------------------------------------------------------------- captioners


def save_blip(folder: Path) -> None:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = _bert_tokenizer()
    config = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, initializer_range=INIT_RANGE,
                         bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                         eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id),
        vision_config=_vit_kwargs(), projection_dim=32, initializer_range=INIT_RANGE)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tok).save_pretrained(folder)


def save_git(folder: Path) -> None:
    from transformers import GitConfig, GitForCausalLM, GitProcessor

    tok = _bert_tokenizer()
    config = GitConfig(
        vision_config=_vit_kwargs(), vocab_size=len(tok), hidden_size=32, intermediate_size=37,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
        initializer_range=INIT_RANGE, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id)
    GitForCausalLM(config).eval().save_pretrained(folder)
    GitProcessor(_clip_image_processor(), tok).save_pretrained(folder)


def save_vision_encoder_decoder(folder: Path) -> None:
    from transformers import (
        GPT2Config, GPT2Tokenizer, ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
    )

    vocab, merges = _byte_level_bpe(["<|endoftext|>"])
    tok = GPT2Tokenizer(vocab=vocab, merges=merges)
    eos = tok.eos_token_id
    decoder = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                         add_cross_attention=True, is_decoder=True, initializer_range=INIT_RANGE,
                         bos_token_id=eos, eos_token_id=eos)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(**_vit_kwargs()), decoder)
    # As in nlpconnect/vit-gpt2-image-captioning: generation starts from and pads with <|endoftext|>.
    config.decoder_start_token_id = eos
    config.pad_token_id = eos
    config.eos_token_id = eos
    model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.decoder_start_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.eos_token_id = eos
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)


def save_florence2(folder: Path) -> None:
    """Florence-2 in transformers' native classes: a one-stage DaViT vision tower (stride 4, so a
    32x32 image is 8x8 patches + 1 pooled token = 65 image tokens) and a one-layer BART."""
    from transformers import (
        BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor,
    )

    vocab, merges = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<image>"])
    tok = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    image_tokens = (IMAGE_SIZE // 4) ** 2 + 1
    # As in the hub's Florence-2 processors: resize straight to the square input, no crop.
    image_processor = CLIPImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                         image_seq_length=image_tokens)
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tok)
    config = Florence2Config(
        text_config=dict(model_type="bart", vocab_size=len(tok), d_model=32, max_position_embeddings=128,
                         encoder_layers=1, decoder_layers=1, encoder_ffn_dim=37, decoder_ffn_dim=37,
                         encoder_attention_heads=2, decoder_attention_heads=2, init_std=INIT_RANGE,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id,
                         forced_eos_token_id=tok.eos_token_id),
        vision_config=dict(depths=[1], patch_size=[7], patch_stride=[4], patch_padding=[3],
                           patch_prenorm=[False], embed_dim=[32], num_heads=[2], num_groups=[2],
                           window_size=4, drop_path_rate=0.0, projection_dim=32, initializer_range=INIT_RANGE),
        image_token_id=tok.image_token_id, initializer_range=INIT_RANGE)
    Florence2ForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)


def save_blip2(folder: Path) -> None:
    """BLIP-2: ViT, a one-layer Q-Former with 4 query tokens and a one-layer OPT, with OPT's
    tokenizer conventions (</s> as BOS) and the "<image>" placeholder token."""
    from transformers import (
        AddedToken, Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, GPT2Tokenizer,
    )

    vocab, merges = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>"])
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                        pad_token="<pad>", add_bos_token=True)
    # Added the way the hub's BLIP-2 tokenizers have it (an added special token, no image_token
    # attribute), which is the path Blip2Processor handles.
    tok.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    n_query = 4
    config = Blip2Config(
        vision_config=_vit_kwargs(),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                            encoder_hidden_size=32, vocab_size=len(tok), initializer_range=INIT_RANGE),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, ffn_dim=37,
                         num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=64,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, init_std=INIT_RANGE),
        num_query_tokens=n_query, image_token_index=image_token_id, initializer_range=INIT_RANGE)
    Blip2ForConditionalGeneration(config).eval().save_pretrained(folder)
    Blip2Processor(BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tok,
                   num_query_tokens=n_query).save_pretrained(folder)


# -------------------------------------------------------------------------------- embedders


def save_clip(folder: Path) -> None:
    """A whole CLIPModel: the text tower and the vision tower load from the same folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tok = _clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=tok.model_max_length,
                         initializer_range=INIT_RANGE, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, projection_dim=16),
        # Each tower's own config carries projection_dim (as in the hub's CLIP configs) so that
        # CLIPTextModelWithProjection / CLIPVisionModelWithProjection load from this folder alone.
        vision_config=dict(_vit_kwargs(), projection_dim=16), projection_dim=16, initializer_range=INIT_RANGE)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPProcessor(_clip_image_processor(), tok).save_pretrained(folder)


# ---------------------------------------------------------------------------- text to image


def save_stable_diffusion(folder: Path) -> None:
    """A StableDiffusionPipeline: tiny UNet, VAE (latents at half the image side) and CLIP text
    encoder, with sd-turbo's scheduler (Euler, deterministic given the initial noise)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=tok.model_max_length,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id))
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)


# ---------------------------------------------------------------------------- language models


def save_llama(folder: Path) -> None:
    """A LlamaForCausalLM (the architecture of SmolLM2) with a byte-level BPE tokenizer whose
    end-of-text token also pads, as SmolLM2's does."""
    from transformers import GPT2Tokenizer, LlamaConfig, LlamaForCausalLM

    vocab, merges = _byte_level_bpe(["<|endoftext|>"])
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>")
    eos = tok.eos_token_id
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         initializer_range=INIT_RANGE, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
