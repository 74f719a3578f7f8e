"""The ACD's configuration (callcenter.config): queues, operators, acd settings, fixed-address accounts.

Every mistake is reported with file:line:column and the key, as for the rest of the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from callcenter.acd.events import EventList
from callcenter.acd.operators import OperatorState
from callcenter.app import build_distributor
from callcenter.config import AcdConfig, Config, ConfigError, load_config

# a syntactically valid argon2id hash (never verified here)
HASH = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

BASE = f"""\
accounts:
  - username: "1001"
    password: a
  - username: "1002"
    password: b
users:
  - username: Operator1
    password_hash: "{HASH}"
    role: operator
queues:
  - name: hotline
  - name: emergency
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callcenter.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value


def at(path: Path, needle: str, after: str = "") -> str:
    """"LINE:COLUMN" (1-based) of ``needle`` on the first line containing ``after`` and ``needle``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if after in line and needle in line[line.index(after):]:
            return f"{number}:{line.index(needle, line.index(after)) + 1}"
    raise AssertionError(f"{needle!r} not in {path}")


def test_the_shipped_configuration_builds_a_distributor() -> None:
    config = load_config(None, env={})
    names = {q.name for q in config.queues}
    assert {"emergency", "hotline", "care_center", "care_station", "community", "complaint", "taxi"} <= names
    for operator in config.operators:
        assert set(operator.queues) <= names
        assert operator.phone in {a.username for a in config.accounts}
    acd = build_distributor(config, Clock(), EventList())
    assert set(acd.queues) == names and set(acd.operators) == {o.name for o in config.operators}
    op1 = acd.operators["op1"]
    assert op1.phone == "1001" and op1.user == "operator1" and op1.state is OperatorState.LOGGED_OUT
    assert op1.skills["cmn"] == 9 and op1.queues["emergency"] == 10
    assert acd.queues["hotline"].overflow == "callback" and acd.queues["emergency"].strategy == "ring_all"
    assert config.acd.callback_retry == [300, 900, 3600] and config.acd.callback_attempts == 5


def test_a_valid_acd_section_loads(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """\
  - name: overflowing
    max_wait: 60
    overflow: queue:hotline
    skills: {cmn: 9}
operators:
  - name: op1
    phone: "1001"
    user: operator1          # logins ignore case
    skills: {cmn: 1, yue: 9}
    queues: {hotline: 1, emergency: 100}
acd:
  callback_retry: [60, 120]
  callback_attempts: 2
""")
    config = load_config(path, env={})
    (op,) = config.operators
    assert op.queues == {"hotline": 1, "emergency": 100} and op.skills == {"cmn": 1, "yue": 9}
    assert config.queues[2].overflow == "queue:hotline"
    assert config.acd.callback_retry == [60.0, 120.0]


def test_operators_naming_unknown_queues_phones_and_users(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """\
operators:
  - name: op1
    phone: "1009"
    user: nobody
    queues: {hotline: 5, taxi: 3}
  - name: op2
    phone: "1002"
""")
    error = error_of(path)
    lines = str(error).splitlines()
    quoted = '"1009"'
    assert lines == [
        f'{path}:{at(path, quoted)}: operators[0].phone: no account named "1009"',
        f'{path}:{at(path, "nobody")}: operators[0].user: no user named "nobody"',
        f'{path}:{at(path, "3", "taxi")}: operators[0].queues.taxi: no queue named "taxi"',
    ]


def test_overflow_syntax_and_unknown_overflow_queue(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("  - name: emergency\n", "  - name: emergency\n    overflow: voicemail\n")
                 + "  - name: c\n    overflow: elsewhere\n")
    assert str(error_of(path)) == (
        f'{path}:{at(path, "elsewhere")}: queues[2].overflow: overflow is "queue:NAME", "voicemail" '
        f'or "callback"')
    path = write(tmp_path, BASE + "  - name: c\n    overflow: queue:nowhere\n")
    assert str(error_of(path)) == (
        f'{path}:{at(path, "queue:nowhere")}: queues[2].overflow: no queue named "nowhere"')
    assert "queues[2].overflow" in str(error_of(write(tmp_path, BASE + "  - name: c\n    overflow: 'queue:'\n")))


@pytest.mark.parametrize("level", [0, 10, -1])
def test_queue_skill_levels_are_1_to_9(tmp_path: Path, level: int) -> None:
    path = write(tmp_path, BASE + f"  - name: c\n    skills: {{cmn: 5, yue: {level}}}\n")
    assert str(error_of(path)) == (
        f"{path}:{at(path, str(level), 'yue')}: queues[2].skills.yue: a skill level is 1 to 9, got {level}")


def test_operator_skill_levels_and_queue_weights(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """\
operators:
  - name: op1
    skills: {cmn: 0, yue: 9, nurse: 10}
    queues: {hotline: 101, emergency: 0}
""")
    lines = str(error_of(path)).splitlines()
    assert lines == [
        f"{path}:{at(path, '0', 'cmn')}: operators[0].skills.cmn: must be 1 to 9, got 0",
        f"{path}:{at(path, '10', 'nurse')}: operators[0].skills.nurse: must be 1 to 9, got 10",
        f"{path}:{at(path, '101')}: operators[0].queues.hotline: must be 1 to 100, got 101",
        f"{path}:{at(path, '0', 'emergency: ')}: operators[0].queues.emergency: must be 1 to 100, got 0",
    ]
    fixed = write(tmp_path, BASE + "operators:\n  - name: op1\n    skills: {cmn: 9, yue: 1}\n"
                                   "    queues: {hotline: 100, emergency: 1}\n")
    assert load_config(fixed, env={}).operators[0].queues == {"hotline": 100, "emergency": 1}


def test_duplicate_operator_and_queue_names(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "operators:\n  - name: op1\n  - name: op2\n  - name: op1\n")
    assert str(error_of(path)) == (
        f'{path}:{len(path.read_text().splitlines())}:11: operators[2].name: duplicate operator name "op1" '
        f"(first at index 0)")
    path = write(tmp_path, BASE + "  - name: hotline\n")
    assert str(error_of(path)) == (
        f'{path}:{len(path.read_text().splitlines())}:11: queues[2].name: duplicate queue name "hotline" '
        f"(first at index 0)")


def test_bad_operator_start_state_and_strategy(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "  - name: c\n    strategy: random\noperators:\n  - name: op1\n    start: paused\n")
    message = str(error_of(path))
    assert f"{path}:{at(path, 'random')}: queues[2].strategy:" in message
    assert f"{path}:{at(path, 'paused')}: operators[0].start:" in message


def test_acd_settings_bounds(tmp_path: Path) -> None:
    path = write(tmp_path, "acd:\n  ring_timeout: 1\n  victim: longest_wait\n  callback_attempts: 0\n")
    message = str(error_of(path))
    assert f"{path}:2:17: acd.ring_timeout:" in message
    assert f"{path}:3:11: acd.victim:" in message
    assert f"{path}:4:22: acd.callback_attempts:" in message
    assert AcdConfig().abandon_threshold == 3.0 and AcdConfig().on_preempt == "requeue"


def test_account_contact_is_a_sip_uri(tmp_path: Path) -> None:
    path = write(tmp_path, 'accounts:\n  - username: "1001"\n    password: a\n    contact: 10.0.0.5:5060\n')
    assert str(error_of(path)) == (
        f'{path}:4:14: accounts[0].contact: expected a SIP URI like "sip:1001@10.0.0.5:5060", got "10.0.0.5:5060"')
    config = Config.model_validate({"accounts": [
        {"username": "1001", "password": "a", "contact": "sip:1001@10.0.0.5:5060;transport=tcp"}]})
    assert config.accounts[0].contact == "sip:1001@10.0.0.5:5060;transport=tcp"
    assert Config.model_validate({"accounts": [{"username": "1001", "password": "a"}]}).accounts[0].contact is None
