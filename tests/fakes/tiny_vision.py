"""A tiny image-to-text model (ViT encoder + GPT-2 decoder, random weights) built and exported in seconds.

It stands in for a real captioner such as a ViT + GPT-2 one from a model hub: the same VisionEncoderDecoder
architecture, a real byte-level BPE tokenizer (tests.fakes.tiny_models) and a ViT image processor with 32 px
inputs. Its "captions" are random words, but they are real decoder output through ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inference.build.export import prepare_image_to_text
from inference.catalogue import ImageToTextModel
from tests.fakes.tiny_models import build_tokenizer

#: Special token ids, as the tiny tokenizer assigns them.
PAD, START, END = 0, 1, 2

_PREPARED: list[tuple[ImageToTextModel, Path]] = []


def build_tiny_captioner(out: Path, *, seed: int = 0) -> Path:
    """Save a random 1-layer ViT + GPT-2 VisionEncoderDecoderModel, its tokenizer and image processor to ``out``.

    The special tokens get all-zero output rows, so greedy decoding never picks them (the largest of ~400 random
    logits is positive): every caption runs to its token limit, and is never empty.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    vocab = len(AutoTokenizer.from_pretrained(out))
    ids = {"bos_token_id": START, "eos_token_id": END, "pad_token_id": PAD}
    encoder = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    decoder = GPT2Config(
        vocab_size=vocab, n_positions=128, n_embd=32, n_layer=1, n_head=2, tie_word_embeddings=False,
        add_cross_attention=True, is_decoder=True, **ids,
    )  # fmt: skip
    config: Any = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = START, PAD, END
    torch.manual_seed(seed)
    model: Any = VisionEncoderDecoderModel(config=config).eval()  # eval: no dropout, so ORT and PyTorch agree
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)  # larger weights: the words wander over the vocabulary
        model.decoder.get_output_embeddings().weight[[PAD, START, END]] = 0.0
    model.generation_config = GenerationConfig(decoder_start_token_id=START, **ids)
    model.save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def prepared_captioner(factory: pytest.TempPathFactory) -> tuple[ImageToTextModel, Path]:
    """The tiny captioner exported through ``models prepare``'s code path: its spec and the cache it is in.
    Built once per test session (a few seconds)."""
    if not _PREPARED:
        root = factory.mktemp("tiny-vision")
        spec = ImageToTextModel(source=str(build_tiny_captioner(root / "captioner")), max_new_tokens=8)
        out = prepare_image_to_text(spec, root / "cache")
        assert out is not None
        _PREPARED.append((spec, root / "cache"))
    return _PREPARED[0]
