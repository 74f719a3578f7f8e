from pathlib import Path

import pytest

from callcenter.config import DEFAULT_CONFIG_PATH, Config, ConfigError, ListenSpec, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callcenter.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=kwargs.pop("env", {}), **kwargs)
    return info.value


def test_default_file_loads():
    config = load_config(None, env={})
    assert DEFAULT_CONFIG_PATH.is_file()
    assert [str(spec) for spec in config.sip.listen] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert str(config.http.listen) == "127.0.0.1:8080"
    assert {a.username: a.kind for a in config.accounts} == {"1001": "phone", "1002": "phone", "t0001": "terminal"}
    (trunk,) = config.trunks
    assert (trunk.name, trunk.host, trunk.port) == ("carrier", "127.0.0.2", 5080)
    assert "12349" in trunk.dids and "01012349" in trunk.dids
    actions = {route.number: route.action for route in config.routing.numbers}
    assert actions["1000"] == "flow" and actions["9196"] == "echo" and actions["8000"] == "connect"
    flows = {r.number: (r.flow, r.button) for r in config.routing.numbers if r.action == "flow"}
    assert flows["12349"] == ("terminal", "emergency") and flows["1000"] == ("hotline", "hotline")
    assert {q.name for q in config.queues} >= {"emergency", "hotline", "care_center", "care_station"}
    assert config.sip.realm == config.sip.domain == "callcenter.local"


def test_empty_file_gives_defaults(tmp_path):
    config = load_config(write(tmp_path, ""), env={})
    assert config == Config()
    assert config.engine.max_call_duration == 3600
    assert config.sip.listen[0] == ListenSpec(transport="udp", host="127.0.0.1", port=5060)
    assert config.sip.registration.default_expires == 600
    assert config.media.rtp_port_min == 20000 and config.bus.kind == "inprocess"
    assert config.accounts == [] and config.trunks == []
    assert config.database_url() == f"sqlite+aiosqlite:///{(Path('data') / 'callcenter.db').resolve()}"


def test_sections_left_empty_mean_defaults(tmp_path):
    config = load_config(write(tmp_path, "sip:\naccounts:\ndatabase:\n  url:\n"), env={})
    assert config.sip.domain == "callcenter.local" and config.accounts == [] and config.database.url is None


def test_realm_defaults_to_domain(tmp_path):
    config = load_config(write(tmp_path, "sip:\n  domain: hotline.example.org\n"), env={})
    assert config.sip.realm == "hotline.example.org"


def test_unknown_key_names_line_and_suggests(tmp_path):
    path = write(tmp_path, "engine:\n  node_name: a\ntrunks:\n  - name: c\n    host: h\n    tranport: tcp\n")
    error = error_of(path)
    assert str(error) == f"{path}:6:5: trunks[0].tranport: unknown key 'tranport' — did you mean 'transport'?"
    assert error.issues[0].line == 6 and error.issues[0].column == 5


def test_unknown_section(tmp_path):
    error = error_of(write(tmp_path, "sipp:\n  domain: x\n"))
    assert ":1:1: sipp: unknown key 'sipp' — did you mean 'sip'?" in str(error)


def test_bad_listen_value(tmp_path):
    path = write(tmp_path, "sip:\n  listen:\n    - udp:127.0.0.1:5060\n    - udp:localhost\n")
    assert str(error_of(path)) == (
        f'{path}:4:7: sip.listen[1]: expected "udp:HOST:PORT" or "tcp:HOST:PORT", got "udp:localhost"'
    )


def test_listen_ipv6_and_hostnames(tmp_path):
    path = write(tmp_path, "sip:\n  listen: ['udp:[::1]:5070', 'TCP:pbx.example.org:5060', 'tcp:0.0.0.0:0']\n")
    listen = load_config(path, env={}).sip.listen
    assert [(s.transport, s.host, s.port) for s in listen] == [
        ("udp", "::1", 5070), ("tcp", "pbx.example.org", 5060), ("tcp", "0.0.0.0", 0)]
    assert str(listen[0]) == "udp:[::1]:5070"
    assert "sip.listen[0]" in str(error_of(write(tmp_path, "sip:\n  listen: ['udp:[zz]:5060']\n")))
    assert "sip.listen[0]" in str(error_of(write(tmp_path, "sip:\n  listen: ['udp:1.2.3.4:70000']\n")))


def test_duplicate_account(tmp_path):
    path = write(tmp_path, """\
accounts:
  - username: "1001"
    password: a
  - username: "1002"
    password: b
  - username: "1001"
    ha1: 0123456789abcdef0123456789abcdef
""")
    assert str(error_of(path)) == (
        f'{path}:6:15: accounts[2].username: duplicate username "1001" (first at index 0)'
    )


def test_account_needs_password_or_ha1_and_quoted_numbers(tmp_path):
    path = write(tmp_path, "accounts:\n  - username: 1001\n    kind: phone\n")
    message = str(error_of(path))
    assert f"{path}:2:15: accounts[0].username: expected a string, got 1001" in message
    assert "quotes" in message
    path = write(tmp_path, "accounts:\n  - username: '1001'\n    kind: phone\n")
    assert str(error_of(path)) == f"{path}:2:5: accounts[0]: either 'password' or 'ha1' is required"


def test_trunk_rules(tmp_path):
    path = write(tmp_path, """\
trunks:
  - name: a
    host: 10.0.0.1
    channels: 2
    emergency_reserve: 2
    dids: ["010-12349"]
  - name: b
    host: 10.0.0.2
    dids: ["01012349", "12x"]
""")
    message = str(error_of(path))
    assert f"{path}:5:24: trunks[0].emergency_reserve: expected fewer than channels (2), got 2" in message
    assert f'{path}:9:24: trunks[1].dids[1]: expected digits with an optional leading "+", got "12x"' in message
    fixed = path.read_text().replace('"12x"', '"123"').replace("channels: 2", "channels: 3")
    message = str(error_of(write(tmp_path, fixed)))
    assert message == f'{path}:9:12: trunks[1].dids[0]: DID "01012349" is already on trunk "a"'


def test_routing_numbers_unique(tmp_path):
    path = write(tmp_path, "routing:\n  numbers:\n    - {number: '1000', name: a}\n    - {number: '1000', name: b}\n")
    assert 'routing.numbers[1].number: duplicate number "1000"' in str(error_of(path))


def test_media_ports(tmp_path):
    path = write(tmp_path, "media:\n  rtp_port_min: 30000\n  rtp_port_max: 20000\n")
    assert f"{path}:3:17: media.rtp_port_max: expected a port greater than rtp_port_min (30000)" in str(error_of(path))
    assert "even" in str(error_of(write(tmp_path, "media:\n  rtp_port_min: 20001\n")))


def test_env_override(tmp_path):
    env = {"CALLCENTER__SIP__DOMAIN": "hotline.example.org", "CALLCENTER__SIP__FLOOD__RATE": "20",
           "CALLCENTER__ENGINE__NODE_NAME": "2", "CALLCENTER__SIP__AUTHENTICATE_UNKNOWN": "false", "OTHER": "x"}
    config = load_config(write(tmp_path, "sip:\n  domain: x.org\n"), env=env)
    assert config.sip.domain == "hotline.example.org" and config.sip.realm == "hotline.example.org"
    assert config.sip.flood.rate == 20 and config.sip.authenticate_unknown is False
    assert config.engine.node_name == "2"  # text keys keep the value as written


def test_env_errors_name_the_variable(tmp_path):
    env = {"CALLCENTER__ACCOUNTS__0__PASSWORD": "x", "CALLCENTER__SIP__LISTEN": "udp:0.0.0.0:5060",
           "CALLCENTER__SIP__FLOOD__RATE": "fast", "CALLCENTER__SIP__DOMIAN": "x"}
    error = error_of(write(tmp_path, ""), env=env)
    lines = str(error).splitlines()
    assert ("environment variable CALLCENTER__ACCOUNTS__0__PASSWORD: accounts.0.password: 'accounts' is a list; "
            "lists cannot be set from the environment — set it in the configuration file") in lines
    assert any(line.startswith("environment variable CALLCENTER__SIP__LISTEN: sip.listen: 'sip.listen' is a list")
               for line in lines)
    assert ('environment variable CALLCENTER__SIP__FLOOD__RATE: sip.flood.rate: expected a number, got "fast"'
            in lines)
    assert ("environment variable CALLCENTER__SIP__DOMIAN: sip.domian: unknown key 'domian' — did you mean "
            "'domain'?") in lines
    assert len(lines) == 4


def test_cli_overrides_win(tmp_path):
    env = {"CALLCENTER__SIP__DOMAIN": "env.org"}
    overrides = {"sip.domain": "cli.org", "http": {"listen": "0.0.0.0:9000"}, "sip.listen": ["tcp:[::]:5062"]}
    config = load_config(write(tmp_path, "sip:\n  domain: file.org\n"), env=env, overrides=overrides)
    assert config.sip.domain == "cli.org"
    assert (config.http.listen.host, config.http.listen.port) == ("0.0.0.0", 9000)
    assert [str(s) for s in config.sip.listen] == ["tcp:[::]:5062"]
    error = error_of(write(tmp_path, ""), overrides={"engine.max_call_duration": 0})
    assert str(error) == ("override engine.max_call_duration: engine.max_call_duration: "
                          "expected a number greater than 0.0, got 0")


def test_multiple_errors_reported_together(tmp_path):
    path = write(tmp_path, """\
engine:
  max_call_duration: -1
sip:
  listen: [udp:localhost]
  flood: {rate: lots}
logging:
  level: loud
  format: xml
http:
  listen: nowhere
""")
    error = error_of(path)
    assert [(issue.line, issue.key) for issue in error.issues] == [
        (2, "engine.max_call_duration"), (4, "sip.listen[0]"), (5, "sip.flood.rate"),
        (7, "logging.level"), (8, "logging.format"), (10, "http.listen")]
    assert len(str(error).splitlines()) == 6
    assert f"{path}:7:10: logging.level: expected 'debug', 'info', 'warning' or 'error', got \"loud\"" in str(error)
    assert f'{path}:10:11: http.listen: expected "HOST:PORT", got "nowhere"' in str(error)


def test_yaml_syntax_error_and_duplicate_keys(tmp_path):
    path = write(tmp_path, "sip:\n  domain: [a\n")
    assert str(error_of(path)).startswith(f"{path}:")
    assert "invalid YAML" in str(error_of(path))
    path = write(tmp_path, "sip:\n  domain: a\n  domain: b\n")
    assert str(error_of(path)) == f"{path}:3:3: sip.domain: duplicate key 'domain' (first on line 2)"


def test_top_level_must_be_mapping_and_missing_file(tmp_path):
    assert "expected a mapping of sections" in str(error_of(write(tmp_path, "- a\n")))
    assert "cannot read" in str(error_of(tmp_path / "missing.yaml"))


def test_database_url(tmp_path):
    config = load_config(write(tmp_path, "database:\n  url: postgresql+asyncpg://u:p@db/cc\n"), env={})
    assert config.database_url() == "postgresql+asyncpg://u:p@db/cc"
    assert "asyncio driver" in str(error_of(write(tmp_path, "database:\n  url: postgresql://db/cc\n")))
