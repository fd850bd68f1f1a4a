"""Tiny random-weight models (diffusion, CLIP, SigLIP, LLaVA) built from configs, saved like real ones, no download."""

from __future__ import annotations

import json
from pathlib import Path


def _byte_level_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (as in GPT-2 and CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def build_tiny_clip_tokenizer(target: Path):
    """A CLIPTokenizer over single bytes (no merges): every text encodes, offline."""
    from transformers import CLIPTokenizer

    target.mkdir(parents=True, exist_ok=True)
    chars = _byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (target / "vocab.json").write_text(json.dumps(vocab))
    (target / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(target / "vocab.json"), str(target / "merges.txt"), model_max_length=77)


def build_tiny_stable_diffusion(target: Path, block_channels: tuple[int, int] = (32, 64)) -> Path:
    """Save a Stable Diffusion pipeline (UNet2DConditionModel, AutoencoderKL, CLIPTextModel) with random weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer(target.parent / f"{target.name}-tokenizer")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=block_channels, layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=len(tokenizer),
    ))
    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(target)
    return target


def build_tiny_preview_decoder(target: Path) -> Path:
    """Save a tiny random AutoencoderTiny (TAESD-like) that decodes the tiny pipeline's latents."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4, upsampling_scaling_factor=2,
    ).save_pretrained(target)
    return target


TINY_TOWER = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)


def build_tiny_clip(target: Path, projection_dim: int = 24) -> Path:
    """Save a random CLIP (30x30 images, patch 6) with a byte-level tokenizer and its processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_tiny_clip_tokenizer(target.parent / f"{target.name}-tokenizer")
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}), tokenizer=tokenizer
    ).save_pretrained(target)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(TINY_TOWER, vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=len(tokenizer) - 2,
                         eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1),
        vision_config=dict(TINY_TOWER, image_size=30, patch_size=6), projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(target)
    return target


SIGLIP_CORPUS = ["a photo of a cat", "a photo of a dog", "a red bicycle by the sea", "text on a sign", "no parking"] * 40


def build_tiny_siglip(target: Path) -> Path:
    """Save a random SigLIP (30x30 images) with a sentencepiece tokenizer trained here on a tiny corpus."""
    import io

    import sentencepiece
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    target.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SIGLIP_CORPUS), model_writer=model, vocab_size=100, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    spm_path = target / "spiece.model"
    spm_path.write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(str(spm_path), model_max_length=16)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 30, "width": 30}), tokenizer=tokenizer).save_pretrained(target)
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(TINY_TOWER, vocab_size=len(tokenizer), max_position_embeddings=16),
        vision_config=dict(TINY_TOWER, image_size=30, patch_size=6),
    )
    SiglipModel(config).save_pretrained(target)
    return target


LLAVA_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llava(target: Path) -> Path:
    """Save a random LLaVA: the tiny Llama as its language model, a tiny CLIP vision tower (28x28, 16 image tokens)."""
    import torch
    from transformers import (
        AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
    )

    from tests.plugins.conftest import build_tiny_llama

    language = build_tiny_llama(target.parent / f"{target.name}-lm")
    tokenizer = AutoTokenizer.from_pretrained(language)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = LLAVA_TEMPLATE
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}), tokenizer=tokenizer,
        patch_size=7, vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE, num_additional_image_tokens=1,
    ).save_pretrained(target)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**TINY_TOWER, image_size=28, patch_size=7),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(target)
    return target
