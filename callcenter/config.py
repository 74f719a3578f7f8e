"""Typed engine configuration: a YAML file, then ``CALLCENTER__SECTION__KEY`` environment variables, then
explicit overrides (CLI), validated by pydantic models. Every problem is reported at once, each as
``file:line:column: dotted.key: what was expected`` (or the environment variable / override that set it)."""

import ipaddress
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from callcenter.configtypes import (
    Argon2Hash,
    Ha1,
    Name,
    RedisUrl,
    Section,
    SipUser,
    duplicates,
    hostport_text,
    phone_number,
    require_unique,
    split_hostport,
)
from callcenter.yamlsource import Loc, SourceIssue, apply_env, apply_overrides, locate, parse_yaml, validation_issues
from callcenter.yamlsource import invalid as _invalid
from callcenter.yamlsource import show_value as _show

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "callcenter.yaml"
ENV_PREFIX = "CALLCENTER__"
ConfigIssue = SourceIssue


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem, str() gives one line per problem."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class HostPort(Section):
    """``HOST:PORT`` (IPv6 as ``[::1]:8080``); port 0 asks the OS for a free port."""

    host: str = Field(min_length=1)
    port: int = Field(ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            parsed = split_hostport(data)
            if parsed is None:
                raise _invalid(f'expected "HOST:PORT", got {_show(data)}')
            return {"host": parsed[0], "port": parsed[1]}
        return data

    def __str__(self) -> str:
        return hostport_text(self.host, self.port)


class ListenSpec(Section):
    """A SIP listening socket, written ``udp:HOST:PORT`` or ``tcp:HOST:PORT``."""

    transport: Literal["udp", "tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            transport, _, rest = data.strip().partition(":")
            parsed = split_hostport(rest)
            if transport.lower() not in ("udp", "tcp") or parsed is None:
                raise _invalid(f'expected "udp:HOST:PORT" or "tcp:HOST:PORT", got {_show(data)}')
            return {"transport": transport.lower(), "host": parsed[0], "port": parsed[1]}
        return data

    def __str__(self) -> str:
        return f"{self.transport}:{hostport_text(self.host, self.port)}"


class EngineConfig(Section):
    node_name: Name = "node1"
    data_dir: Path = Path("data")
    max_call_duration: float = Field(3600.0, gt=0)
    shutdown_grace: float = Field(5.0, ge=0)
    max_calls: int = Field(2000, ge=1)


class FloodConfig(Section):
    rate: float = Field(50.0, gt=0)
    burst: int = Field(200, ge=1)
    ban_seconds: float = Field(60.0, ge=0)


class RegistrationConfig(Section):
    min_expires: int = Field(60, ge=1)
    max_expires: int = Field(3600, ge=1)
    default_expires: int = Field(600, ge=1)

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.min_expires > self.max_expires:
            raise _invalid(problems=[(("max_expires",), f"must be >= min_expires ({self.min_expires}), "
                                                        f"got {self.max_expires}")])
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise _invalid(problems=[(("default_expires",), f"must be between min_expires ({self.min_expires}) "
                                      f"and max_expires ({self.max_expires}), got {self.default_expires}")])
        return self


def _default_listen() -> list[ListenSpec]:
    return [ListenSpec(transport=t, host="127.0.0.1", port=5060) for t in ("udp", "tcp")]


class SipConfig(Section):
    listen: list[ListenSpec] = Field(default_factory=_default_listen, min_length=1)
    domain: str = Field("callcenter.local", min_length=1)
    realm: str = Field("callcenter.local", min_length=1)
    user_agent: str = "callcenter/0.1"
    authenticate_unknown: bool = True
    trust_registered_source: bool = True
    digest_algorithms: list[Literal["MD5", "SHA-256"]] = Field(
        default_factory=lambda: ["MD5"], min_length=1
    )
    max_message_size: int = Field(65535, ge=1024)
    max_headers: int = Field(256, ge=16)
    flood: FloodConfig = Field(default_factory=FloodConfig)
    nonce_lifetime: int = Field(300, ge=1)
    registration: RegistrationConfig = Field(default_factory=RegistrationConfig)

    @model_validator(mode="before")
    @classmethod
    def _realm_defaults_to_domain(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("realm"):
            domain = data.get("domain")
            data = {**data, "realm": domain if isinstance(domain, str) and domain else "callcenter.local"}
        return data

    @field_validator("listen")
    @classmethod
    def _no_duplicate_listeners(cls, value: list[ListenSpec]) -> list[ListenSpec]:
        if problems := duplicates([str(spec) for spec in value], "listener"):
            raise _invalid(problems=problems)
        return value


class HttpConfig(Section):
    listen: HostPort = Field(default_factory=lambda: HostPort(host="127.0.0.1", port=8080))
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    secure_cookies: bool = False


_SYNC_URLS = {"sqlite": "sqlite+aiosqlite", "sqlite+pysqlite": "sqlite+aiosqlite",
              "postgresql": "postgresql+asyncpg", "postgresql+psycopg2": "postgresql+asyncpg"}


class DatabaseConfig(Section):
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _async_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme, sep, _ = value.partition("://")
        if not sep or not scheme:
            raise _invalid(f'expected a database URL like "sqlite+aiosqlite:///data/callcenter.db", '
                           f"got {_show(value)}")
        if scheme in _SYNC_URLS:
            raise _invalid(f'expected an asyncio driver (e.g. "{_SYNC_URLS[scheme]}://"), got {_show(value)}')
        return value


class BusConfig(Section):
    kind: Literal["inprocess", "redis"] = "inprocess"
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"


class RecordingsConfig(Section):
    root: Path = Path("recordings")
    record_calls: bool = True


class MediaConfig(Section):
    address: str = "127.0.0.1"
    rtp_port_min: int = Field(20000, ge=1024, le=65534)
    rtp_port_max: int = Field(30000, ge=1024, le=65534)
    inband_dtmf: bool = True

    @field_validator("address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise _invalid(f"expected an IP address (it is written into SDP), got {_show(value)}") from None
        return value

    @field_validator("rtp_port_min", "rtp_port_max")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise _invalid(f"expected an even port number (RTP uses even ports), got {value}")
        return value

    @field_validator("rtp_port_max")
    @classmethod
    def _above_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("rtp_port_min")
        if low is not None and value <= low:
            raise _invalid(f"expected a port greater than rtp_port_min ({low}), got {value}")
        return value


class IceServerConfig(Section):
    """A STUN or TURN server for the browser softphone's ICE (a real deployment behind NAT; none by default)."""

    urls: list[str] = Field(min_length=1)  # "stun:host:port", "turn:host:port?transport=udp", "turns:…"
    username: str | None = Field(None, min_length=1)
    credential: str | None = Field(None, min_length=1, repr=False)

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        problems = [((index,), f"expected a stun:, stuns:, turn: or turns: URL, got {_show(url)}")
                    for index, url in enumerate(value) if not re.match(r"(stuns?|turns?):[^\s]+$", url)]
        if problems:
            raise _invalid(problems=problems)
        return value

    @model_validator(mode="after")
    def _turn_needs_credentials(self) -> Self:
        if any(url.startswith("turn") for url in self.urls) and (self.username is None or self.credential is None):
            raise _invalid("a TURN server needs a username and a credential")
        return self


class WebRtcConfig(Section):
    """The browser softphone's media (WebRTC through aiortc). No ICE server is contacted unless listed here;
    ``host_addresses`` pins the host candidates the engine offers (empty: every interface but loopback, which
    is aioice's choice; the demo and the tests use ["127.0.0.1"], with the browser on the same machine)."""

    ice_servers: list[IceServerConfig] = Field(default_factory=list)
    host_addresses: list[str] = Field(default_factory=list)

    @field_validator("host_addresses")
    @classmethod
    def _ip_addresses(cls, value: list[str]) -> list[str]:
        problems = []
        for index, address in enumerate(value):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                problems.append(((index,), f"expected an IP address (a host candidate), got {_show(address)}"))
        if problems:
            raise _invalid(problems=problems)
        return value


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class AccountConfig(Section):
    """A SIP account: an operator's desk phone or an elder's terminal that registers directly."""

    username: SipUser
    password: str | None = Field(None, min_length=1, repr=False)
    ha1: Ha1 | None = Field(None, repr=False)
    kind: Literal["phone", "terminal"] = "phone"
    display_name: str | None = None
    max_bindings: int = Field(5, ge=1, le=100)
    contact: str | None = None  # a phone at a fixed address that never registers: "sip:1001@10.0.0.5:5060"

    @field_validator("contact")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^sip:[^@\s]+@[^\s]+$", value):
            raise _invalid(f'expected a SIP URI like "sip:1001@10.0.0.5:5060", got {_show(value)}')
        return value

    @model_validator(mode="after")
    def _has_secret(self) -> Self:
        if self.password is None and self.ha1 is None:
            raise _invalid("either 'password' or 'ha1' is required")
        return self


# A trunk key is called "register"; it shadows ABCMeta.register on the class only (instances are fine).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class TrunkConfig(Section):
        """A carrier trunk (line group): where its calls come from and which DIDs it delivers."""

        name: Name
        host: str = Field(min_length=1)
        port: int = Field(5060, ge=1, le=65535)
        transport: Literal["udp", "tcp"] = "udp"
        username: str | None = None
        password: str | None = Field(None, repr=False)
        register: bool = False
        register_expires: int = Field(600, ge=60)
        channels: int = Field(30, ge=1)
        emergency_reserve: int = Field(2, ge=0)
        dids: list[str] = Field(default_factory=list)
        outbound: bool = True

        @field_validator("emergency_reserve")
        @classmethod
        def _below_channels(cls, value: int, info: ValidationInfo) -> int:
            channels = info.data.get("channels")
            if channels is not None and value >= channels:
                raise _invalid(f"expected fewer than channels ({channels}), got {value}")
            return value

        @field_validator("dids")
        @classmethod
        def _normalise_dids(cls, value: list[str]) -> list[str]:
            numbers: list[str] = []
            problems: list[tuple[Loc, str]] = []
            for index, did in enumerate(value):
                try:
                    numbers.append(phone_number(did))
                except PydanticCustomError as exc:
                    problems.append(((index,), exc.context["message"] if exc.context else str(exc)))
            if problems or (problems := duplicates(numbers, "DID")):
                raise _invalid(problems=problems)
            return numbers

        @model_validator(mode="after")
        def _credentials_to_register(self) -> Self:
            if self.register and not self.username:
                raise _invalid(problems=[(("username",), "required when 'register' is true")])
            return self


class UserConfig(Section):
    """A person who logs in to the operator desktop and the HTTP API."""

    username: Name
    password_hash: Argon2Hash = Field(repr=False)
    role: Literal["operator", "supervisor", "auditor", "admin"]
    display_name: str | None = None


class RouteNumber(Section):
    """A number the center answers (a hotline, a button's DID, a test number) and what to do with it.

    ``action: flow`` runs the IVR flow named ``flow`` (a file in ivr_flows/). ``button`` says which terminal
    button dials this number (the flow sees it as ``button``); terminals that dial one number and then send
    a DTMF code for the button are described by ``button_codes`` (code → button)."""

    number: str
    name: str = Field(min_length=1)
    action: Literal["hold", "echo", "connect", "flow"] = "hold"
    target: str | None = None  # connect: the account (desk phone) to ring
    flow: str | None = None
    button: str | None = None
    button_codes: dict[str, str] = Field(default_factory=dict)
    button_code_timeout: float = Field(1.5, gt=0, le=10)
    ring_timeout: float = Field(30.0, gt=0, le=600)
    max_duration: float | None = Field(None, gt=0)
    answer_after: float = Field(0.0, ge=0, le=300)
    emergency: bool = False

    @field_validator("number")
    @classmethod
    def _check_number(cls, value: str) -> str:
        return phone_number(value)

    @field_validator("button_codes", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {str(code): button for code, button in value.items()}
            problems = [((code,), f"a button code is digits, * or #, got {_show(code)}")
                        for code in value if not re.match(r"^[0-9*#]{1,8}$", code)]
            if problems:
                raise _invalid(problems=problems)
        return value

    @model_validator(mode="after")
    def _connect_needs_target(self) -> Self:
        if self.action == "connect" and not self.target:
            raise _invalid(problems=[(("target",), 'action "connect" needs a target: the account to ring')])
        if self.action == "flow" and not self.flow:
            raise _invalid(problems=[(("flow",), 'action "flow" needs a flow: the name of a file in ivr_flows/')])
        if self.action != "flow" and (self.flow or self.button_codes):
            raise _invalid(problems=[(("action",), '"flow" and "button_codes" need action: flow')])
        return self


class QueueConfig(Section):
    """A queue calls wait in for an operator (the ACD distributes them; flows name queues in queue nodes)."""

    name: Name
    display_name: str | None = None
    strategy: Literal["longest_idle", "round_robin", "fewest_calls", "ring_all"] = "longest_idle"
    skills: dict[str, int] = Field(default_factory=dict)  # every operator needs these (skill → minimum level)
    priority: int = Field(0, ge=0, le=9)  # between queues: calls of a higher one come first within a class
    service_level: float = Field(20.0, gt=0, le=3600)  # seconds: answered within this counts as in service
    max_wait: float | None = Field(None, gt=0)  # then the overflow
    overflow: str | None = None  # "queue:NAME" | "voicemail" | "callback" (offered: press 1) | none: keep waiting
    aging: float | None = Field(None, ge=5, le=3600)  # seconds per level a waiting call gains (never a class)
    rejoin_window: float = Field(120.0, ge=0, le=3600)  # a caller who calls back within this keeps the place
    announce_position: bool = False  # "you are number 3 in line"
    announce_wait: bool = False  # "about 2 minutes"
    announce_every: float = Field(60.0, ge=15, le=600)
    music: bool = True

    @field_validator("skills")
    @classmethod
    def _levels(cls, value: dict[str, int]) -> dict[str, int]:
        problems = [((skill,), f"a skill level is 1 to 9, got {level}") for skill, level in value.items()
                    if not 1 <= level <= 9]
        if problems:
            raise _invalid(problems=problems)
        return value

    @field_validator("overflow")
    @classmethod
    def _overflow(cls, value: str | None) -> str | None:
        if value is not None and value not in ("voicemail", "callback") and not re.match(r"^queue:\S+$", value):
            raise _invalid('overflow is "queue:NAME", "voicemail" or "callback"')
        return value


class OperatorConfig(Section):
    """An operator (坐席): the desk phone that rings, the desktop login, skills and queues."""

    name: Name
    display_name: str | None = None
    phone: SipUser | None = None  # the SIP account of the desk phone
    user: Name | None = None  # the desktop login (users[].username)
    skills: dict[str, int] = Field(default_factory=dict)  # skill → level 1-9, e.g. {cmn: 9, yue: 5, nurse: 7}
    queues: dict[str, int] = Field(default_factory=dict)  # queue → weight 1-100 (higher: preferred)
    wrap_up: float = Field(10.0, ge=0, le=600)  # seconds after a call before the next offer
    start: Literal["logged_out", "available"] = "logged_out"  # state when the engine starts
    device: Literal["phone", "browser"] = "phone"  # where offers ring at start (the desktop can change it)

    @field_validator("skills", "queues")
    @classmethod
    def _levels(cls, value: dict[str, int], info: Any) -> dict[str, int]:
        top = 9 if info.field_name == "skills" else 100
        problems = [((key,), f"must be 1 to {top}, got {level}") for key, level in value.items()
                    if not 1 <= level <= top]
        if problems:
            raise _invalid(problems=problems)
        return value


class AcdConfig(Section):
    """How calls meet operators: line seize for emergencies, ring timeouts, callbacks."""

    seize_after: float = Field(0.0, ge=0, le=600)  # an emergency waits this long before seizing an operator
    victim: Literal["shortest_talk", "longest_talk"] = "shortest_talk"  # among the lowest-priority calls
    on_preempt: Literal["requeue", "callback"] = "requeue"  # what happens to the pre-empted caller
    ring_timeout: float = Field(15.0, ge=3, le=120)  # an operator's phone rings this long, then the next one
    max_missed: int = Field(3, ge=1, le=50)  # missed offers in a row before an operator is paused
    keepalive: float = Field(30.0, ge=0, le=3600)  # in-dialog OPTIONS to both sides of a conversation (0: off)
    abandon_threshold: float = Field(3.0, ge=0, le=120)  # hang-ups sooner than this after calling get no task
    callback_retry: list[Annotated[float, Field(ge=0, le=7 * 86400)]] = Field(
        default_factory=lambda: [300.0, 900.0, 3600.0], min_length=1)  # backoff before each next attempt, seconds
    callback_attempts: int = Field(5, ge=1, le=50)  # then the task stays open, marked for a supervisor
    # the desktop's three-way call buttons: service → the number dialled through the outbound trunk
    services: dict[Name, str] = Field(default_factory=lambda: {"120": "120", "110": "110"})
    transfer_ring_timeout: float = Field(30.0, ge=5, le=120)  # a blind transfer to a number rings this long

    @field_validator("services")
    @classmethod
    def _service_numbers(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: phone_number(number) for name, number in value.items()}


class DirectoryConfig(Section):
    """Who is calling: the elders in the database (callcenter/directory). At first start (no elders yet) the
    elders of ``seed`` (a YAML list; ``seed: ""`` for none) are loaded, then ``generate`` demo elders are made.
    ``region`` is the country numbers are read in; with ``area_code`` (e.g. "010") a 7–8 digit local number
    without one is read as a landline of that area. ``file`` is the older name of ``seed``."""

    seed: Path | None = Path("config/demo_elders.yaml")
    generate: int = Field(0, ge=0, le=1_000_000)
    region: str = "CN"
    area_code: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _file_is_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "file" in data:
            if "seed" in data:
                raise _invalid('"file" is the older name of "seed": give one of them')
            data = dict(data)
            data["seed"] = data.pop("file")
        return data

    @field_validator("seed", mode="before")
    @classmethod
    def _no_seed(cls, value: Any) -> Any:
        return None if value in ("", False) else value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise _invalid(f'expected a two-letter region code like "CN", got {_show(value)}')
        return value

    @field_validator("area_code")
    @classmethod
    def _area_code(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"0?[1-9][0-9]{1,2}", value):
            raise _invalid(f'expected an area code like "010", got {_show(value)}')
        return "0" + value.lstrip("0")


class FlowsConfig(Section):
    """IVR flows: the folder of YAML flows (watched: a valid change goes live, a broken one is refused)."""

    directory: Path = Path("ivr_flows")
    watch: bool = True
    watch_interval: float = Field(1.0, gt=0, le=60)
    timezone: str = "Asia/Shanghai"  # the center's local time (hours nodes, greetings)
    max_steps: int = Field(200, ge=10, le=10_000)  # nodes in a row without waiting for the caller
    tts_cache: Path | None = None  # rendered prompts (default: engine.data_dir/tts)


DeskItem = Annotated[str, Field(min_length=1, max_length=64)]


class DeskConfig(Section):
    """What the operator desktop offers in its forms: disposition codes for service records, work order types
    and assignees (care stations, residents' committees, property). Stored as written."""

    dispositions: list[DeskItem] = Field(default_factory=lambda: [
        "紧急救助已派120", "紧急救助已通知家属", "咨询已解答", "服务已预约", "已转接", "投诉已登记", "需回访",
        "误按", "无声电话", "测试呼叫", "其他"], min_length=1)
    work_order_types: list[DeskItem] = Field(default_factory=lambda: [
        "上门探视", "维修", "送餐", "医疗协助", "投诉处理", "其他"], min_length=1)
    assignees: list[DeskItem] = Field(default_factory=lambda: [
        "养老驿站", "居委会", "物业", "养老服务指导中心", "家属"])

    @field_validator("dispositions", "work_order_types", "assignees")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if problems := duplicates(value, "entry"):
            raise _invalid(problems=problems)
        return value


class RoutingConfig(Section):
    numbers: list[RouteNumber] = Field(default_factory=list)

    @field_validator("numbers")
    @classmethod
    def _unique_numbers(cls, value: list[RouteNumber]) -> list[RouteNumber]:
        require_unique(value, "number", "number")
        return value


class Config(Section):
    """The whole engine configuration (see config/callcenter.yaml for what each key means)."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    sip: SipConfig = Field(default_factory=SipConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    recordings: RecordingsConfig = Field(default_factory=RecordingsConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    accounts: list[AccountConfig] = Field(default_factory=list)
    trunks: list[TrunkConfig] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    flows: FlowsConfig = Field(default_factory=FlowsConfig)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    queues: list[QueueConfig] = Field(default_factory=list)
    operators: list[OperatorConfig] = Field(default_factory=list)
    acd: AcdConfig = Field(default_factory=AcdConfig)
    users: list[UserConfig] = Field(default_factory=list)
    desk: DeskConfig = Field(default_factory=DeskConfig)

    @field_validator("accounts")
    @classmethod
    def _unique_accounts(cls, value: list[AccountConfig]) -> list[AccountConfig]:
        require_unique(value, "username", "username")
        return value

    @field_validator("queues")
    @classmethod
    def _unique_queues(cls, value: list[QueueConfig]) -> list[QueueConfig]:
        require_unique(value, "name", "queue name")
        return value

    @field_validator("operators")
    @classmethod
    def _unique_operators(cls, value: list[OperatorConfig]) -> list[OperatorConfig]:
        require_unique(value, "name", "operator name")
        return value

    @model_validator(mode="after")
    def _operators_refer(self) -> Self:
        """Operators name queues, phones and logins that exist; overflows name queues that exist."""
        queues = {q.name for q in self.queues}
        phones = {a.username for a in self.accounts}
        logins = {u.username.casefold() for u in self.users}
        problems: list[tuple[tuple[Any, ...], str]] = []
        for index, op in enumerate(self.operators):
            for queue in op.queues:
                if queue not in queues:
                    problems.append((("operators", index, "queues", queue), f"no queue named {_show(queue)}"))
            if op.phone is not None and op.phone not in phones:
                problems.append((("operators", index, "phone"), f"no account named {_show(op.phone)}"))
            if op.user is not None and op.user.casefold() not in logins:
                problems.append((("operators", index, "user"), f"no user named {_show(op.user)}"))
            if op.device == "browser" and op.user is None:
                problems.append((("operators", index, "device"), "a browser softphone needs a desktop login (user)"))
        for index, q in enumerate(self.queues):
            if q.overflow and q.overflow.startswith("queue:") and q.overflow[6:] not in queues:
                problems.append((("queues", index, "overflow"), f"no queue named {_show(q.overflow[6:])}"))
        if problems:
            raise _invalid(problems=problems)
        return self

    @field_validator("users")
    @classmethod
    def _unique_users(cls, value: list[UserConfig]) -> list[UserConfig]:
        """Logins ignore case, so "Operator1" and "operator1" would be the same person."""
        require_unique(value, "username", "username", key=str.casefold)
        return value

    @field_validator("trunks")
    @classmethod
    def _unique_trunks(cls, value: list[TrunkConfig]) -> list[TrunkConfig]:
        problems = [(loc + ("name",), text) for loc, text in duplicates([t.name for t in value], "trunk name")]
        owner: dict[str, str] = {}
        for index, trunk in enumerate(value):
            for did_index, did in enumerate(trunk.dids):
                if did in owner and owner[did] != trunk.name:
                    problems.append(((index, "dids", did_index), f"DID {_show(did)} is already on trunk "
                                                                  f"{_show(owner[did])}"))
                owner.setdefault(did, trunk.name)
        if problems:
            raise _invalid(problems=problems)
        return value

    def database_url(self) -> str:
        """``database.url``, or an SQLite file ``callcenter.db`` under ``engine.data_dir``."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.engine.data_dir / 'callcenter.db').resolve()}"


def load_config(path: Path | str | None = None, env: Mapping[str, str] = os.environ,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load ``path`` (default: the packaged config/callcenter.yaml), then apply ``CALLCENTER__SECTION__KEY``
    environment variables (values parsed as YAML scalars), then ``overrides`` (nested dicts and/or dotted keys,
    e.g. ``{"sip.domain": "x"}``). Raises ConfigError listing every problem."""
    file = DEFAULT_CONFIG_PATH if path is None else Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(source, None, None, "", f"cannot read the configuration file: {exc}")]) \
            from None
    root, data, issues = parse_yaml(text, source)
    if issues and root is None:
        raise ConfigError(issues)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        message = f"expected a mapping of sections at the top level, got {_show(data)}"
        raise ConfigError([locate((), message, root, source, {})])
    origins: dict[Loc, str] = {}
    apply_env(Config, data, env, ENV_PREFIX, origins, issues)
    apply_overrides(data, overrides or {}, origins, issues)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        issues += validation_issues(Config, exc, root, source, origins)
    if issues:
        in_file = sorted((i for i in issues if i.line is not None), key=lambda i: (i.line or 0, i.column or 0))
        raise ConfigError(in_file + [i for i in issues if i.line is None])
    return config
