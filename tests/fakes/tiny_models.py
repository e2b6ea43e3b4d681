"""Tiny causal LMs with a real byte-level BPE tokenizer and chat template, built in a second.

They stand in for SmolLM2 in unit tests: same architecture family (llama) or GPT-2, same chat
template shape (``<|im_start|>role\\n...<|im_end|>``), a few hundred KB on disk, random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2

_CORPUS = [
    "The capital of France is Paris. The capital of Japan is Tokyo.",
    "Name three fruits: apple, banana and cherry.",
    "Hello there! How are you today? I am fine, thank you.",
    "Write a short poem about the sea and the sky.",
    "def add(a, b):\n    return a + b\n",
    "Convert 10 kilometres to miles: about 6.2 miles.",
    "Café, naïve, façade, über, 日本語, emoji 🙂 and more unicode text.",
    "user assistant system message answer question summary translate",
]


def build_tokenizer(out: Path, vocab_size: int = 400) -> None:
    """Train a byte-level BPE on a few lines and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown text
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        # Without this the tokenizer also emits token_type_ids, which generate() refuses.
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def build_tiny_causal_lm(
    out: Path,
    arch: Literal["llama", "gpt2"] = "llama",
    *,
    seed: int = 0,
    max_positions: int = 2048,
    q4_grid: bool = False,
) -> Path:
    """Save a random 2-layer causal LM and its tokenizer to ``out`` (a from_pretrained directory).

    The special tokens (EOS, ``<|im_start|>``) get all-zero output rows, so greedy decoding never
    picks them (the largest of ~400 random logits is positive): streams run to ``max_new_tokens``
    unless stopped, which makes cancellation observable. ``q4_grid`` puts the llama layers' weights
    on a GGUF Q4_1-style grid (blocks of 32 inputs, ``d * q + m``), like SmolLM2's.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    vocab = len(tok)
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    torch.manual_seed(seed)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        # head_dim 16 and GQA (4 query / 2 kv heads) like SmolLM2's layout; the genai builder's int4
        # quantizer needs matrix sides that are multiples of its block size (32).
        config: Any = LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
            tie_word_embeddings=False, **ids,
        )  # fmt: skip
        model: Any = LlamaForCausalLM(config)
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=vocab, n_positions=max_positions, n_embd=32, n_layer=2, n_head=2, **ids)
        model = GPT2LMHeadModel(config)
    # A model built from a config starts in train mode: dropout would make ORT and PyTorch disagree.
    model.eval()
    # Larger random weights make the greedy continuation wander over the vocabulary instead of
    # settling on one token, so streams carry many distinct pieces.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
        head = model.get_output_embeddings()
        if head is not None and arch == "llama":  # GPT-2 ties its head to the input embedding
            head.weight[[ids["bos_token_id"], ids["eos_token_id"]]] = 0.0
        if q4_grid:
            snap_to_q4_grid(model)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out)
    return out


def snap_to_q4_grid(model: Any, block: int = 32) -> None:
    """Round every decoder-layer linear weight onto a Q4_1 grid, in place (as GGUF Q4_1 stores it)."""
    import torch

    for name, param in model.named_parameters():
        if ".layers." not in name or param.dim() != 2 or param.shape[1] % block:
            continue
        w = param.data.reshape(param.shape[0], -1, block)
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        d = torch.where(hi > lo, (hi - lo) / 15, torch.ones_like(hi))
        param.data.copy_((torch.round((w - lo) / d) * d + lo).reshape(param.shape))
