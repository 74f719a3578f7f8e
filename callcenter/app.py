"""The composition root: configuration → parts → reactor. The only place that wires rooms together."""

from __future__ import annotations

import asyncio
import gc
import secrets
from pathlib import Path
from typing import Any

import structlog

from agents.web import bound_address, start_http
from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.control import CallControl
from callcenter.acd.dialler import Dialler
from callcenter.acd.eventlog import QueueEventWriter
from callcenter.acd.events import FanOut
from callcenter.acd.missed import MissedCalls
from callcenter.acd.model import AcdSettings, QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.publish import AcdPublisher
from callcenter.acd.router import Distributor
from callcenter.acd.softphone import Softphones
from callcenter.acd.telephony import SipConnector
from callcenter.bus.inprocess import InProcessBus
from callcenter.calls.inbound import Route
from callcenter.calls.model import EndReason
from callcenter.calls.records import CallRecorder
from callcenter.calls.trunk_registration import TrunkRegistration
from callcenter.calls.trunks import TrunkSet
from callcenter.calls.ua import Account, RegistrationPolicy, UserAgentCore
from callcenter.config import Config
from callcenter.directory.lookup import number_key, open_directory
from callcenter.directory.store import DirectoryStore
from callcenter.ivr.service import FlowService
from callcenter.ivr.tts import SpeechSynthesizer
from callcenter.ivr.versions import FlowStore
from callcenter.media.prompts import PromptCache
from callcenter.media.service import MediaService
from callcenter.media.webrtc import WebRtcGateway
from callcenter.net.flood import FloodGuard
from callcenter.net.transport import SipTransport
from callcenter.sip.digest_server import AccountSecret
from callcenter.stats.metrics import QueueMetrics
from callcenter.store.cdr import CdrWriter
from callcenter.store.db import create_engine_for, run_migrations

log = structlog.get_logger("callcenter.app")


def _account_secret(account: Any) -> AccountSecret:
    if account.password is not None:
        return AccountSecret.from_password(account.password)
    return AccountSecret.from_ha1(md5=account.ha1)


class _FlowObserver:
    """Tells the IVR when a call ends (its flow stops, it leaves its queue)."""

    def __init__(self, flows: FlowService) -> None:
        self.flows = flows

    def call_started(self, call: Any) -> None:
        pass

    def call_answered(self, call: Any) -> None:
        pass

    def call_ended(self, call: Any) -> None:
        self.flows.call_ended(call)

    def registration_changed(self, aor: str, contact: str, expires: int) -> None:
        pass


class Engine:
    """One engine node: SIP transport, user-agent core, call handlers, CDR writer, bus."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.bus = InProcessBus()
        self.db: Any = None
        self.cdr: CdrWriter | None = None
        self.transport: SipTransport | None = None
        self.media: MediaService | None = None
        self.ua: UserAgentCore | None = None
        self.registrations: list[TrunkRegistration] = []
        self.flows: FlowService | None = None
        self.directory: DirectoryStore | None = None  # the elders (callcenter.directory.store)
        self.acd: Distributor | None = None
        self.acd_connector: SipConnector | None = None
        self.webrtc: WebRtcGateway | None = None  # the browser softphones' WebRTC
        self.softphones: Softphones | None = None
        self.control: CallControl | None = None  # the desktop's call control (answer, hold, transfer…)
        self.acd_metrics: QueueMetrics | None = None
        self.acd_events: QueueEventWriter | None = None
        self.missed: MissedCalls | None = None
        self.dialler: Dialler | None = None  # callbacks and outbound calls operators place
        self.callbacks: CallbackTasks | None = None
        self.http: Any = None  # the desktop's aiohttp runner (agents.web)
        self.http_address: tuple[str, int] | None = None
        self._stopping: asyncio.Future[None] | None = None

    # -- start ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        data_dir = Path(cfg.engine.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        url = cfg.database_url()
        await asyncio.get_running_loop().run_in_executor(None, run_migrations, url)
        self.db = create_engine_for(url)
        self.cdr = CdrWriter(self.db, party_key=number_key(cfg))  # party_number: an elder's calls by number
        await self.cdr.start()

        sip = cfg.sip
        flood = FloodGuard(rate=sip.flood.rate, burst=sip.flood.burst, ban_seconds=sip.flood.ban_seconds)
        transport = SipTransport(
            self.reactor,
            self._on_message,
            flood=flood,
            max_size=sip.max_message_size,
            max_headers=sip.max_headers,
        )
        self.transport = transport
        for spec in sip.listen:
            if spec.transport == "udp":
                transport.listen_udp(spec.host, spec.port)
            else:
                transport.listen_tcp(spec.host, spec.port)

        accounts = [
            Account(
                username=a.username,
                secret=_account_secret(a),
                kind=a.kind,
                display_name=a.display_name,
                max_bindings=a.max_bindings,
                contact=a.contact,
            )
            for a in cfg.accounts
        ]
        ua = UserAgentCore(
            self.reactor,
            transport.send,
            domain=sip.domain,
            realm=sip.realm,
            accounts=accounts,
            trunks=TrunkSet.from_config(cfg.trunks),
            flood=flood,
            local_addresses=transport.addresses,
            user_agent=sip.user_agent,
            authenticate_unknown=sip.authenticate_unknown,
            trust_registered_source=sip.trust_registered_source,
            registration=RegistrationPolicy(
                min_expires=sip.registration.min_expires,
                max_expires=sip.registration.max_expires,
                default_expires=sip.registration.default_expires,
            ),
            nonce_lifetime=sip.nonce_lifetime,
            secret=secrets.token_bytes(32),
            digest_algorithms=tuple(sip.digest_algorithms),
        )
        self.ua = ua
        self.media = MediaService(
            self.reactor,
            address=cfg.media.address,
            port_min=cfg.media.rtp_port_min,
            port_max=cfg.media.rtp_port_max,
            prompts=PromptCache(data_dir / "prompts"),
            recordings_root=Path(cfg.recordings.root),
            inband_dtmf=cfg.media.inband_dtmf,
        )
        self.media.start()
        for handler in (ua.inbound, ua.outbound):
            handler.media = self.media
            handler.record_calls = cfg.recordings.record_calls
            handler.media_address = cfg.media.address
            handler.max_call_duration = cfg.engine.max_call_duration
        ua.inbound.max_calls = cfg.engine.max_calls
        ua.inbound.routes = {r.number: Route(**r.model_dump()) for r in cfg.routing.numbers}
        ua.observers.append(CallRecorder(self.cdr, self.bus, node=cfg.engine.node_name))
        self.callbacks = CallbackTasks(self.db)
        await self.callbacks.recover_dialling()
        self.acd_events = QueueEventWriter(self.db, node=cfg.engine.node_name)
        await self.acd_events.start()
        self.acd_metrics = QueueMetrics()
        publisher = AcdPublisher(self.bus, ua.calls.get)
        events = FanOut(self.acd_events, self.acd_metrics, publisher)
        self.missed = MissedCalls(self.callbacks, calls=ua.calls.get, threshold=cfg.acd.abandon_threshold,
                                  events=events, now=self.reactor.seconds)
        events.sinks.append(self.missed)
        await self.missed.load()
        self.acd = build_distributor(cfg, self.reactor, events)
        self.acd.on_abandon = self.missed.queue_abandoned
        for operator in self.acd.operators.values():
            operator.listener = publisher.operator_changed
        self.acd.on_preempt_callback = self.missed.preempted_to_callback
        self.missed.acd = self.acd
        ua.observers.append(self.missed)
        self.directory = await open_directory(cfg, self.db)  # fills an empty directory: seed, generated elders
        await self.directory.start()  # the access log's writer (batched, off the request path)
        self.flows = FlowService(
            config=cfg,
            clock=self.reactor,
            media=self.media,
            ua=ua,
            store=FlowStore(self.db),
            tts=SpeechSynthesizer(Path(cfg.flows.tts_cache or data_dir / "tts")),
            queues=self.acd,
            directory=self.directory,
            callbacks=self.callbacks,
            recordings_root=Path(cfg.recordings.root),
            on_ivr_abandon=self.missed.ivr_abandoned,
        )
        await self.flows.start()
        ua.inbound.flows = self.flows
        ua.observers.append(_FlowObserver(self.flows))
        missed = self.missed
        self.acd_connector = SipConnector(
            ua, self.media, self.flows, ring_timeout=cfg.acd.ring_timeout, keepalive=cfg.acd.keepalive,
            acd=self.acd,
            create_callback=lambda call, reason, source: missed.callback_for(call, reason, source))
        self.acd.connector = self.acd_connector
        self.webrtc = WebRtcGateway(cfg.webrtc, clock=self.reactor)
        self.softphones = Softphones(self.acd_connector, self.webrtc)
        self.dialler = Dialler(ua, self.media, self.acd, self.callbacks, retry=list(cfg.acd.callback_retry),
                               max_attempts=cfg.acd.callback_attempts, ring_timeout=cfg.acd.ring_timeout * 2,
                               softphones=self.softphones)
        self.control = CallControl(
            ua=ua, media=self.media, acd=self.acd, connector=self.acd_connector, softphones=self.softphones,
            flows=self.flows, dialler=self.dialler, bus=self.bus, services=cfg.acd.services,
            transfer_ring_timeout=cfg.acd.transfer_ring_timeout)
        self.control.start()
        self.acd_connector.start()
        self.acd.start()
        for trunk in ua.trunks.trunks.values():
            if trunk.register:
                reg = TrunkRegistration(ua, trunk)
                self.registrations.append(reg)
                reg.start()
        self.http = await start_http(self, cfg)
        self.http_address = bound_address(self.http)
        log.info("http.listen", host=self.http_address[0], port=self.http_address[1], users=len(cfg.users))
        # Everything built so far (modules, configuration, flows, prompts) lives as long as the engine: move it
        # out of the collector's sight, so that a full collection (which stops the loop) has only the calls'
        # objects to walk and an emergency INVITE never waits behind one.
        gc.collect()
        gc.freeze()
        log.info(
            "engine.started",
            node=cfg.engine.node_name,
            sip=[f"{t.lower()}:{h}:{p}" for t, (h, p) in transport.addresses.items()],
            database=url.split("://", 1)[0],
            routes=len(ua.inbound.routes),
            trunks=len(ua.trunks.trunks),
            accounts=len(accounts),
            http=f"http://{self.http_address[0]}:{self.http_address[1]}/",
        )

    def _on_message(self, msg: Any, source: tuple[str, str, int]) -> None:
        if self.ua is not None:
            self.ua.receive(msg, source)

    # -- stop -----------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Graceful shutdown: refuse new calls, BYE the active ones, flush records."""
        if self._stopping is not None:
            await self._stopping
            return
        self._stopping = asyncio.get_running_loop().create_future()
        ua = self.ua
        try:
            if self.http is not None:  # first: no operator action may start anything while we wind down
                from agents.web import stop_http

                await stop_http(self.http)
                self.http = None
            if ua is not None:
                ua.stop_accepting()
                active = len(ua.calls)
                log.info("engine.stopping", active_calls=active)
                for reg in self.registrations:
                    reg.stop(unregister=True)
                ua.hangup_all(EndReason.SHUTDOWN)
                deadline = asyncio.get_running_loop().time() + self.config.engine.shutdown_grace
                while ua.calls and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                for call in list(ua.calls.values()):  # no answer to our BYE in time: end them locally
                    handler = ua.inbound if call.direction == "inbound" else ua.outbound
                    handler.end(call, EndReason.SHUTDOWN, ended_by="engine")
                ua.close()
            if self.flows is not None:
                self.flows.stop()
            if self.control is not None:
                self.control.stop()
            if self.acd is not None:
                self.acd.stop()
            if self.acd_connector is not None:
                self.acd_connector.stop()
            if self.softphones is not None:
                await self.softphones.close()  # the browsers' peer connections, before media stops
            if self.missed is not None:
                await self.missed.drain()
            if self.dialler is not None:
                await self.dialler.drain()
            if self.callbacks is not None:
                await self.callbacks.drain()
            if self.acd_events is not None:
                await self.acd_events.close()
            if self.directory is not None:
                await self.directory.close()  # the access log's queued rows
            if self.media is not None:
                self.media.stop()  # closes every leg and finalises their recordings
            if self.transport is not None:
                await self.transport.stop_listening()
            if self.cdr is not None:
                await self.cdr.close()
            if self.db is not None:
                await self.db.dispose()
            log.info("engine.stopped")
        finally:
            self._stopping.set_result(None)



def build_distributor(cfg: Config, clock: Any, events: Any) -> Distributor:
    """The ACD from the configuration: queues, operators (in their start state) and settings."""
    queues = [QueueSettings(
        name=q.name, display_name=q.display_name or q.name, strategy=q.strategy, skills=dict(q.skills),
        priority=q.priority, service_level=q.service_level, max_wait=q.max_wait, overflow=q.overflow,
        aging=q.aging, rejoin_window=q.rejoin_window, announce_position=q.announce_position,
        announce_wait=q.announce_wait, announce_every=q.announce_every, music=q.music) for q in cfg.queues]
    now = clock.seconds()
    operators = [Operator(
        name=o.name, display_name=o.display_name or o.name, phone=o.phone, user=o.user, skills=dict(o.skills),
        queues=dict(o.queues), wrap_up=o.wrap_up, device=o.device, state=OperatorState(o.start), since=now,
        idle_since=now)
        for o in cfg.operators]
    settings = AcdSettings(seize_after=cfg.acd.seize_after, victim=cfg.acd.victim, on_preempt=cfg.acd.on_preempt,
                           ring_timeout=cfg.acd.ring_timeout, max_missed=cfg.acd.max_missed)
    return Distributor(clock, None, queues=queues, operators=operators, settings=settings, events=events)
