"""The Faust app: topics, the intake and the timers, top to bottom.

    agent / frames / decisions / learning / control topics
        └──▶ intake (batches) ──▶ features  ──▶ Redis (online features, short-term memory)
                          ├──▶ learning  ──▶ learning topic (shadow predictions, metrics)
                          │                  control topic (promotion events)
                          │                  Redis (live policy + model snapshots), MLflow
                          ├──▶ archive   ──▶ PostgreSQL events table (hot 90 d, then cold)
                          └──▶ dead-letter topic (bad input, with the reason)

Run it with ``selflearn worker`` (``faust -A ops.stack.worker_app worker`` adds the
Prometheus sensor) or ``faust -A streams.app worker``; scale out by starting
more workers, up to one per partition. Importing this module connects to
nothing (it reads ``stack.json`` for the broker's address, if there is one):
the archive's schema is created and the intake built when the worker starts
(``streams.worker``). Faust tables are not used
for state: on a broker without transactions their changelog recovery is not
exact (docs/broker.md); each projection keeps its state beside its own
watermarks and a batch is acknowledged only once a learning checkpoint covers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError

from schemas.addresses import StackNotRunning, resolve
from schemas.catalog import DEAD_LETTER, STREAMS, all_topics, topic_name
from schemas.settings import Settings
from streams.faust_transport import SelflearnApp
from streams.pipeline import Publish
from streams.stream_intake import StreamIntake
from streams.topics import make_topics, refuse_auto_create
from streams.worker import WorkerRuntime, broker_url, wait_for_broker

log = logging.getLogger(__name__)
settings = Settings()
prefix = settings.topic_prefix

# -- the app, tuned for the embedded broker (docs/broker.md): fast (re)joins ----
app = SelflearnApp(
    f"{prefix}-worker", broker=broker_url(settings),
    store="memory://", key_serializer="raw", value_serializer="raw",
    topic_partitions=settings.partitions, consumer_auto_offset_reset="earliest",
    broker_rebalance_timeout=settings.rebalance_timeout,
    broker_session_timeout=settings.session_timeout, broker_heartbeat_interval=1,
    stream_buffer_maxsize=settings.worker_batch * 4, web_enabled=False,
    datadir=str(settings.data_dir / "faust"), broker_credentials=settings.kafka_ssl_context(),
)


@app.on_worker_init.connect
def _broker_first(sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
    """Before Faust starts its clients: wait for the broker, then make our topics.

    Waiting: see :func:`streams.worker.wait_for_broker`. Only for a broker
    that is configured (or in ``stack.json``): with none, the worker fails at
    once, naming what is missing. Topics not made here (the broker did not
    answer in time) are made by the intake's probe once it does.
    """
    refuse_auto_create()  # before Faust's consumer asks for metadata naming our topics
    with contextlib.suppress(StackNotRunning):
        bootstrap = resolve(settings).kafka_bootstrap
        if wait_for_broker(f"kafka://{bootstrap}"):
            # Made with our partition count before Faust subscribes: its consumer's
            # first metadata request would otherwise leave a fresh broker to create
            # them with its own (Tansu: 4), and agents would hash onto other partitions.
            try:
                made = make_topics(bootstrap, all_topics(prefix), settings.partitions,
                                   settings.kafka_ssl_context())
            except KafkaError as exc:
                log.warning("could not make the topics yet (%s); the intake will", exc)
            else:
                if made:
                    log.info("created topics %s", made)


# -- topics -------------------------------------------------------------------
sources = app.topic(*(topic_name(prefix, s) for s in STREAMS), value_serializer="raw")
dead_letters = app.topic(topic_name(prefix, DEAD_LETTER), value_serializer="raw")
outputs = {s: app.topic(topic_name(prefix, s), value_serializer="raw") for s in STREAMS}


async def publish(out: Publish) -> None:
    """Hand every produced record to the broker and wait until it has them all.

    A record the broker refused is sent again (back-off up to 5 s) until it is
    taken: the batch is acknowledged only after this returns, so a broker
    that restarts empty and answers errors for a while (Tansu refuses some
    produce requests right after a restart) stalls the worker instead of
    crashing it. A record sent twice is a duplicate its readers drop by id.
    """
    pending: list[tuple[Any, bytes | None, bytes]] = [
        (dead_letters, None, record) for record in out.dead]
    pending += [(outputs[s], key, value) for s, key, value in out.sends]
    delay = 0.1
    while pending:
        futures = [await topic.send(key=key, value=value) for topic, key, value in pending]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [p for p, r in zip(pending, results, strict=True) if isinstance(r, Exception)]
        if failed:
            first = next(r for r in results if isinstance(r, Exception))
            log.warning("broker refused %d of %d record(s) (%r); sending them again in %.1f s",
                        len(failed), len(pending), first, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        pending = failed


runtime = WorkerRuntime(settings, publish)


# -- the intake: batches from aiokafka (default) or the Faust stream agent ------
@app.task
async def intake() -> None:
    """Connect, then run every event once through features, learning and archive."""
    started = await runtime.start()
    if isinstance(started, StreamIntake):
        started.consumer = app.consumer
    try:
        await started.run()
    except Exception as exc:  # a worker whose intake died must not look alive
        await app.crash(exc)
        raise


if settings.intake == "stream":

    @app.agent(sources)
    async def process(stream: Any) -> None:
        """Faust's stream path into the same projections (see streams.stream_intake)."""
        await runtime.started.wait()
        assert isinstance(runtime.intake, StreamIntake)
        await runtime.intake.process(stream)


# -- timers -------------------------------------------------------------------
@app.timer(interval=15.0)
async def consumer_lag() -> None:
    """Lag per partition this worker owns, to the sensor."""
    await runtime.report_lag()


@app.timer(interval=3600.0)
async def retention() -> None:
    """Hourly: days older than the hot window go to cold files, their partitions dropped."""
    if runtime.archive is not None:
        await asyncio.to_thread(runtime.archive.apply_retention, datetime.now(UTC))
