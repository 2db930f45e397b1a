"""Several retrieval strategies in parallel, a judge picks the best answer.

LlamaIndex's multi-strategy notebook sends one query to a naive RAG engine, a
high-top-k engine and a reranking engine at once, then has an LLM judge the three
answers. The same shape here, with every strategy's work journaled:

1. ``fan_out`` sends one ``StrategyEvent`` per strategy (``ctx.send_event``).
2. ``run_strategy`` (``num_workers=3``) runs them in parallel; each keeps what it
   retrieved and answered in ``ctx.store``, journaled with its step's commit.
3. ``judge`` buffers the answers with ``ctx.collect_events`` and, once all three are
   in, picks the best.
4. Afterwards, ``engine.history`` and ``engine.state_at`` show each strategy's state
   as it was journaled, checkpoint by checkpoint.

Retrieval, answering and judging are deterministic stand-ins for the models.
Run it from the repository root: ``python examples/multi_strategy_workflow.py [--db PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import uuid

import engine
from engine import Context, Event, StartEvent, StopEvent, Workflow, step

DOCS = [
    "Tides are caused mainly by the Moon's gravity pulling on the oceans.",
    "Spring tides happen when the Sun, Moon and Earth line up, at new and full moon.",
    "Neap tides happen when the Sun and Moon are at right angles, at the quarter moons.",
    "The Sun's gravity also raises tides, about half as strong as the Moon's pull.",
    "Spring tides have nothing to do with the season of spring.",
    "The Bay of Fundy has the highest tides in the world.",
    "Tide tables predict the times of high and low water at each port.",
    "A storm surge on top of a spring tide can flood low-lying coasts.",
]

STRATEGIES = {
    # name: (documents kept, rerank?, seconds the "model" takes)
    "naive": (2, False, 0.10),
    "high_top_k": (5, False, 0.20),
    "rerank": (2, True, 0.25),
}

STOP = {"what", "the", "a", "of", "and", "at", "on", "to", "in", "is", "are", "do", "with"}


# -- deterministic stand-ins for the retriever, the reranker and the LLMs ---------------


def terms(text: str) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return {w.removesuffix("s").removesuffix("d").removesuffix("e") for w in words} - STOP


def retrieve(query: str, k: int) -> list[int]:
    """Keyword retrieval: the k documents sharing most terms with the query."""
    q = terms(query)
    return sorted(range(len(DOCS)), key=lambda i: -len(q & terms(DOCS[i])))[:k]


def rerank(query: str, hits: list[int], keep: int) -> list[int]:
    """A 'cross-encoder': prefers documents that explain (happen, cause, line up)."""
    explains = terms("happen cause line up when")
    return sorted(hits, key=lambda i: -len((terms(query) | explains) & terms(DOCS[i])))[:keep]


def llm_answer(query: str, hits: list[int]) -> str:
    return " ".join(DOCS[i] for i in hits)


def llm_judge(query: str, answer: str) -> int:
    """Relevance (query terms and explanation words covered) minus a length penalty."""
    wanted = terms(query) | terms("sun moon line up")
    return 10 * len(wanted & terms(answer)) - len(answer) // 20


# -- the workflow -----------------------------------------------------------------------


class StrategyEvent(Event):
    strategy: str


class AnswerEvent(Event):
    strategy: str
    answer: str


class MultiStrategyFlow(Workflow):
    @step
    async def fan_out(self, ctx: Context, ev: StartEvent) -> StrategyEvent | None:
        await ctx.store.set("query", ev.query)
        for name in STRATEGIES:
            ctx.send_event(StrategyEvent(strategy=name))
        return None

    @step(num_workers=3)
    async def run_strategy(self, ctx: Context, ev: StrategyEvent) -> AnswerEvent:
        query = await ctx.store.get("query")
        keep, reranks, latency = STRATEGIES[ev.strategy]
        await asyncio.sleep(latency)  # the models are slow: this is why they run in parallel
        hits = retrieve(query, 5 if reranks else keep)
        if reranks:
            hits = rerank(query, hits, keep)
        answer = llm_answer(query, hits)
        await ctx.store.set(
            f"strategy/{ev.strategy}",
            {"retrieved": [f"doc{i}" for i in hits], "answer_chars": len(answer)},
        )
        return AnswerEvent(strategy=ev.strategy, answer=answer)

    @step
    async def judge(self, ctx: Context, ev: AnswerEvent) -> StopEvent | None:
        answers = ctx.collect_events(ev, [AnswerEvent] * len(STRATEGIES))
        if answers is None:
            return None  # not all in yet: the buffer is journaled with this step
        query = await ctx.store.get("query")
        scores = {a.strategy: llm_judge(query, a.answer) for a in answers}
        best = max(answers, key=lambda a: scores[a.strategy])
        await ctx.store.set("verdict", {"best": best.strategy, "scores": scores})
        return StopEvent(result={"best": best.strategy, "answer": best.answer, "scores": scores})


# -- the story --------------------------------------------------------------------------


def story(db: str) -> int:
    engine.configure(db)
    run_id = f"tides-{uuid.uuid4().hex[:6]}"
    query = "What causes spring tides?"
    print(f"1. One query, {len(STRATEGIES)} strategies in parallel: {query!r}")
    result = MultiStrategyFlow().run(run_id=run_id, query=query).result(timeout=30)
    for name, score in result["scores"].items():
        print(f"   {name:<11} judged {score:>3}{'   <- best' if name == result['best'] else ''}")
    print(f"   answer: {result['answer']}")

    print(f"\n2. The run's checkpoints (engine.history({run_id!r}))")
    checkpoints = engine.history(run_id)
    strategy_cps = [cp for cp in checkpoints if cp.name == "run_strategy"]
    collected = 0
    for cp in checkpoints:
        if cp.name == "judge":
            collected += 1
            what = f"collected {collected} of {len(STRATEGIES)} answers"
            what += ", picked the best" if cp.detail.get("stopped") else ", waiting"
        elif cp.name:
            what = f"set {', '.join(cp.set_keys)}"
        else:
            what = "the run completed"
        print(f"   #{cp.number} {cp.name or cp.kind:<13} {what}")

    print("\n3. Each strategy's state, as journaled (engine.state_at(run_id, step=N))")
    for cp in strategy_cps:
        key = cp.set_keys[0]
        view = engine.state_at(run_id, step=cp.number)
        others = [k for k in view.values if k.startswith("strategy/") and k != key]
        print(f"   at #{cp.number}: {key} = {view.values[key]}")
        print(f"          (the store then also held: {', '.join(others) or 'no other strategy'})")

    started = min(cp.started_at or cp.ended_at for cp in strategy_cps)
    wall = max(cp.ended_at for cp in strategy_cps) - started
    model_time = sum(latency for _, _, latency in STRATEGIES.values())
    print(
        f"\n   {model_time:.2f} s of model time finished in {wall:.2f} s: "
        "the strategies ran in parallel (num_workers=3)"
    )
    final = engine.state_at(run_id).values["verdict"]
    print(f"   the judge's verdict, journaled too: {final}")
    return 0 if len(strategy_cps) == len(STRATEGIES) and wall < model_time else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="journal path (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durable-example-") as tmp:
        try:
            return story(args.db or os.path.join(tmp, "journal.db"))
        finally:
            engine.default_engine().close()


if __name__ == "__main__":
    sys.exit(main())
