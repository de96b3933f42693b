"""Structured outputs on the host: llguidance matchers that say, step by step, which tokens may come next.

One `GrammarCompiler` per server wraps the tokenizer for llguidance once (building the `LLTokenizer`
takes about a second). Compiling a request's grammar (`compile`) happens off the event loop before the
request is queued, so a grammar llguidance rejects is a 400. Every sequence then gets its own
`GrammarMatcher` (a copy of the compiled prototype, so the `n` choices of a request compile once),
which the engine asks for a token bitmask before each sampled token and advances with each token
sampled. The bitmask uses the sampler's packing (32 tokens per int32 word, llguidance's own), so it is
written straight into a row and ANDed with the row's other restrictions.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llguidance
import llguidance.hf
import numpy as np

from jaxserve.errors import InvalidRequest
from jaxserve.sampling.bitmask import bitmask_width, full_bitmask
from jaxserve.sampling.grammar import GrammarRequest, grammar_text

if TYPE_CHECKING:
    from jaxserve.modeling.tokenizer import Tokenizer

log = logging.getLogger(__name__)

_LOG_LEVEL = 0
"""llguidance's own logging (0 silent): errors reach us through is_error()/get_error() instead."""


class GrammarCompiler:
    """Compiles structured-output requests against one tokenizer; thread-safe."""

    def __init__(self, tokenizer: Tokenizer, model_vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._model_vocab = full_bitmask(model_vocab_size)  # [W]: bits past the model's vocab cleared
        self._ll_tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()

    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        """The tokenizer as llguidance sees it, built on first use (about a second) and then shared."""
        with self._lock:
            if self._ll_tokenizer is None:
                hf = self._tokenizer.hf
                self._ll_tokenizer = llguidance.hf.from_tokenizer(
                    hf, n_vocab=self._tokenizer.vocab_size, eos_token=sorted(self._tokenizer.eos_token_ids)
                )
            return self._ll_tokenizer

    def compile(self, request: GrammarRequest) -> CompiledGrammar:
        """Compile `request`'s grammar; raises InvalidRequest (naming request.param) if it is invalid."""
        text = grammar_text(request)
        tokenizer = self.ll_tokenizer()
        # The constructor never raises for grammar errors; it leaves the matcher in an error state.
        prototype = llguidance.LLMatcher(tokenizer, text, log_level=_LOG_LEVEL)
        if prototype.is_error():
            raise InvalidRequest(
                f"invalid {request.kind} constraint: {prototype.get_error().strip()}", param=request.param
            )
        return CompiledGrammar(
            request=request,
            prototype=prototype,
            ll_words=bitmask_width(tokenizer.vocab_size),
            model_vocab=self._model_vocab,
        )


@dataclass(frozen=True)
class CompiledGrammar:
    """A compiled grammar ready to be matched; `matcher()` gives each sequence its own state."""

    request: GrammarRequest
    prototype: llguidance.LLMatcher = field(compare=False, repr=False)
    ll_words: int  # bitmask words llguidance writes: ceil(tokenizer vocab / 32)
    model_vocab: np.ndarray = field(compare=False, repr=False)  # [W] int32: the model's whole vocabulary

    def matcher(self) -> GrammarMatcher:
        return GrammarMatcher(self.prototype.deep_copy(), self.ll_words, self.model_vocab)


class GrammarMatcher:
    """One sequence's position in its grammar. Owned by the engine thread."""

    def __init__(self, matcher: llguidance.LLMatcher, ll_words: int, model_vocab: np.ndarray) -> None:
        self._matcher = matcher
        self._ll_words = ll_words
        self._model_vocab = model_vocab  # [W] int32, shared: ANDing with it clears bits past the vocab
        # The row llguidance fills: at least the model's width, so tokens the tokenizer does not know
        # (a model vocabulary padded past the tokenizer's) keep their bits cleared, i.e. disallowed.
        self._row = np.zeros(max(ll_words, self._model_vocab.shape[0]), np.int32)

    def allowed(self) -> np.ndarray:
        """[W] int32 over the model's vocabulary: the tokens the grammar allows next (a fresh array)."""
        # llguidance insists on exactly its own row size; it writes the words in place (GIL released).
        self._matcher.unsafe_compute_mask_ptr(self._row.ctypes.data, self._ll_words * 4)
        return np.bitwise_and(self._row[: self._model_vocab.shape[0]], self._model_vocab)

    def step_bitmask(self, restrictions: np.ndarray) -> np.ndarray:
        """[W] int32: the grammar's tokens that the row's other `restrictions` also allow.

        If nothing is left (say allowed_token_ids and the grammar share no token), the grammar alone
        decides: sampling from an empty set is undefined, and the grammar is the stronger promise.
        """
        grammar = self.allowed()
        combined = np.bitwise_and(grammar, restrictions)
        if combined.any():
            return combined
        log.warning("the request's token restrictions leave no token its grammar allows; using the grammar's")
        return grammar

    def advance(self, token_id: int) -> None:
        """Consume a sampled token. A token the grammar refuses leaves the matcher stopped in error."""
        if not self._matcher.consume_token(token_id):
            # The first line says what went wrong; the rest dumps the parser state and grammar.
            reason = self._matcher.get_error().partition("\n")[0]
            log.warning("grammar matcher refused token %d: %s", token_id, reason)

    @property
    def finished(self) -> bool:
        """The grammar is complete and nothing may follow (or the matcher failed): generation ends."""
        return self._matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        return self._matcher.is_accepting()

    @property
    def error(self) -> str:
        return self._matcher.get_error()
