"""A small simulated RAG application that logs only through :mod:`agent.emit`.

``hypertail demo`` runs it in a subprocess (as a real application would be: a separate program
that never touches the database) and then ingests what it wrote. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from pathlib import Path

import structlog

from agent import emit

log = structlog.get_logger("demo_app")

MODELS = ("gpt-4o-mini", "claude-sonnet", "llama-3-70b")
QUESTIONS = (
    "How do I rotate the API keys?",
    "What is our refund policy for annual plans?",
    "Summarise the incident report from last Tuesday.",
    "Which regions support data residency?",
)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def process_document(rng: random.Random, kb_id: uuid.UUID, fail: bool) -> None:
    """One document through upload, parse, chunk, embed and index (a failure stops the chain)."""
    doc = _uuid(rng)
    pages = rng.randint(1, 40)
    with emit.trace("ingest_document", operation_type="document_processing", kb_id=kb_id) as t:
        log.info("document.received", document_id=str(doc), pages=pages)
        for step in ("upload", "parse", "chunk", "embed", "index"):
            ms = rng.randint(5, 400)
            emit.histogram("document.step_ms", ms, step=step)
            emit.workflow(doc, "failed" if fail and step == "embed" else step, workflow_type="document")
            if fail and step == "embed":
                log.error("document.embed_failed", document_id=str(doc), status=503)
                emit.document_event(step, "failed", document_id=doc, kb_id=kb_id, duration_ms=ms,
                                    error_message="embedding service returned 503")
                # The request failed, though no exception left the trace: say so, or it ends "completed".
                t.set(status="failed", error_type="EmbeddingUnavailable",
                      error_message="embedding service returned 503")
                return
            with emit.span(step, "document", document_id=doc) as s:
                s.set(chunk_count=pages * 3 if step in ("chunk", "embed", "index") else None)
            emit.document_event(step, "completed", document_id=doc, kb_id=kb_id, duration_ms=ms,
                                page_count=pages, chunk_count=pages * 3, token_count=pages * 450,
                                file_size_bytes=pages * 52_000)
        emit.workflow(doc, "ready")


def chat_turn(rng: random.Random, kb_id: uuid.UUID, user: uuid.UUID, conv: str, turn: int) -> None:
    """A chat request: retrieval, an LLM call, and the two chat messages."""
    question = rng.choice(QUESTIONS)
    model = rng.choice(MODELS)
    with emit.trace("chat_request", operation_type="chat", user_id=user, session_id=conv, kb_id=kb_id):
        log.info("chat.question", conversation_id=conv, turn=turn)
        emit.chat_message("user", question, conversation_id=conv, turn_number=turn, user_id=user, kb_id=kb_id)
        with emit.span("retrieve", "retrieval") as s:
            time.sleep(0.001)
            hits = rng.randint(3, 8)
            s.set(result_count=hits)
            log.debug("retrieve.hits", hits=hits)
        if rng.random() < 0.2:  # the reranker sometimes times out; the app goes on without it, so the
            # span is failed and the request is not: `hypertail traces --with-failed-spans` finds these
            try:
                with emit.span("rerank", "rerank"):
                    time.sleep(0.002)
                    raise TimeoutError("reranker did not answer within 2 ms")
            except TimeoutError:
                log.warning("rerank.skipped", reason="timeout")
        sources = [{"document_id": str(_uuid(rng)), "score": round(rng.random(), 3)} for _ in range(hits)]
        tin, tout = rng.randint(400, 3000), rng.randint(50, 600)
        llm_ms = rng.randint(5, 40)  # the "model" answers fast here, but really takes that long
        time.sleep(llm_ms / 1000)
        emit.counter("chat.requests", model=model)
        emit.histogram("chat.llm_ms", llm_ms, model=model)
        emit.gauge("chat.context_chunks", hits)
        emit.llm_call(model, input_tokens=tin, output_tokens=tout, cost_usd=round((tin + 3 * tout) * 2e-6, 6),
                      temperature=0.2, input_preview=question, output_preview="Here is what I found...",
                      duration_ms=llm_ms)
        emit.chat_message("assistant", "Here is what I found in the knowledge base.", conversation_id=conv,
                          turn_number=turn + 1, user_id=user, kb_id=kb_id, model=model, input_tokens=tin,
                          output_tokens=tout, latency_ms=rng.randint(300, 3000), sources=sources,
                          citations=[{"source": 1, "quote": "keys rotate every 90 days"}])


def run(out: Path, seed: int, chats: int, documents: int) -> None:
    rng = random.Random(seed)
    emit.configure(out, level="debug")
    kb_id, user = _uuid(rng), _uuid(rng)
    log.info("app.started", seed=seed)  # outside any trace: a log line with no trace_id
    for i in range(documents):
        process_document(rng, kb_id, fail=i % 7 == 3)
    for i in range(chats):
        chat_turn(rng, kb_id, user, conv=f"conv-{i // 3}", turn=2 * (i % 3) + 1)
    log.info("app.stopped", chats=chats, documents=documents)


def main() -> None:
    p = argparse.ArgumentParser(description="a simulated RAG app that logs through agent.emit")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--chats", type=int, default=30)
    p.add_argument("--documents", type=int, default=12)
    a = p.parse_args()
    run(a.out, a.seed, a.chats, a.documents)


if __name__ == "__main__":
    main()
