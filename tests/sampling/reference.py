"""NumPy references for the sampler's transforms, written from vLLM's definitions (float64)."""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    peak = np.max(np.where(finite, x, -np.inf), axis=-1, keepdims=True)
    e = np.where(finite, np.exp(x - peak), 0.0)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    peak = x.max(axis=-1, keepdims=True)
    return x - peak - np.log(np.exp(x - peak).sum(axis=-1, keepdims=True))


def penalties(
    logits: np.ndarray,
    prompt_mask: np.ndarray,
    counts: np.ndarray,
    repetition: np.ndarray,
    frequency: np.ndarray,
    presence: np.ndarray,
) -> np.ndarray:
    out = np.array(logits, np.float64)
    for b in range(out.shape[0]):
        for v in range(out.shape[1]):
            if prompt_mask[b, v] or counts[b, v] > 0:
                out[b, v] = out[b, v] / repetition[b] if out[b, v] > 0 else out[b, v] * repetition[b]
            out[b, v] -= frequency[b] * counts[b, v] + presence[b] * (counts[b, v] > 0)
    return out


def min_p_keep(logits: np.ndarray, min_p: float) -> np.ndarray:
    """[V] bool: vLLM's rule, probability >= min_p * the largest probability."""
    probs = softmax(logits)
    return probs >= min_p * probs.max()


def top_k_keep(logits: np.ndarray, k: int) -> np.ndarray:
    """[V] bool: logits >= the k-th largest (ties at the threshold kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return np.isfinite(logits) | (logits == -np.inf)
    threshold = np.sort(logits)[::-1][k - 1]
    return logits >= threshold


def top_p_keep(logits: np.ndarray, p: float) -> np.ndarray:
    """[V] bool: sort descending, keep a token while the mass before it is < p; ties with the last kept
    token are kept too."""
    if p >= 1.0:
        return np.ones(logits.shape, bool)
    probs = softmax(logits)
    order = np.argsort(-logits, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    last_kept = order[np.nonzero(before < p)[0][-1]]
    return logits >= logits[last_kept]


def filtered(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, logits, -np.inf)
